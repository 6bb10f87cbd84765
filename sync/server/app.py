"""The central server's HTTP API (FastAPI): pairing, push, pull, snapshot, program config.

Every refusal is ``{"error": {"code", "message"}}`` with a 4xx status and writes nothing.
Tills authenticate with ``Authorization: Bearer <credential>`` (from ``pos-loyalty pair``).
Bodies larger than ``max_body_bytes`` are refused (413) before they are parsed; each
till (or, before pairing and for failed authentications, each client address) is rate
limited (429).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from pos_loyalty.asgi import (
    HTTP_ERROR_CODES,
    BodyLimit,
    InternalErrors,
    error,
    http_error,
    refusal,
)
from sync.protocol import (
    MAX_PAGE,
    MAX_SNAPSHOT_PAGE,
    PROTOCOL_VERSION,
    BootstrapPage,
    PairRequest,
    PairResponse,
    ProgramConfig,
    PullResponse,
    PushRequest,
    PushResponse,
    SnapshotPage,
)

from .store import ServerStore, SyncError, TillAuth, database_errors, database_trouble

log = logging.getLogger("sync.server")

DEFAULT_MAX_BODY = 8 * 1024 * 1024

# The push body is parsed by the endpoint itself (``model_validate_json``), so its schema is
# declared for the OpenAPI document by hand; nested models resolve inside it.
_PUSH_SCHEMA = PushRequest.model_json_schema(
    ref_template="#/paths/~1v1~1sync~1push/post/requestBody/content/application~1json/schema/$defs/{model}"
)


class RateLimiter:
    """Token buckets per key: ``rate`` requests per second, bursts of ``burst``.

    Memory is bounded: a bucket idle long enough to be full again is the same as none and is
    dropped (swept at most once a second), and beyond ``max_keys`` buckets the least recently
    used go first (only keys that cannot be forged at will reach here in numbers: tills by
    id once authenticated, client addresses otherwise)."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        # key -> (tokens, last use); kept in least-recently-used order
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._swept = time.monotonic()

    def _tokens(self, key: str, now: float) -> float:
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - last) * self.rate)

    def allow(self, key: str) -> bool:
        """Take a token from ``key``'s bucket; False (nothing taken) when it is empty."""
        now = time.monotonic()
        with self._lock:
            tokens = self._tokens(key, now)
            allowed = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
            self._tidy(now)
            return allowed

    def __len__(self) -> int:
        return len(self._buckets)

    def _tidy(self, now: float) -> None:
        if now - self._swept >= 1.0:
            self._swept = now
            full = float(self.burst)
            for key in [
                k
                for k, (tokens, last) in self._buckets.items()
                if tokens + (now - last) * self.rate >= full
            ]:
                del self._buckets[key]
        while len(self._buckets) > self.max_keys:
            del self._buckets[next(iter(self._buckets))]


# Failed authentications (no, unknown or replaced credentials) per client address: a till
# sends a wrong credential once a round at most, a prober many; beyond this they are
# answered 429.
AUTH_FAILURE_RATE = 1.0
AUTH_FAILURE_BURST = 20


# The answers any call may give besides its own, in the one error shape (also in place of
# FastAPI's default 422 schema), declared for every route.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: refusal("Not a JSON request, or a bad cursor (`malformed_request`, `bad_cursor`)."),
    401: refusal("No, unknown or revoked credentials (`credentials_required`, ...)."),
    403: refusal("Not this till's or merchant's (`wrong_terminal`, `foreign_cursor`)."),
    404: refusal("No such route."),
    409: refusal("Out of step with the server (`sequence_gap`, `snapshot_unavailable`)."),
    413: refusal("The body is larger than the server's limit (`body_too_large`)."),
    422: refusal("A field or a batch is invalid (`invalid_request`, `broken_batch`)."),
    426: refusal("A protocol version this server does not speak (`protocol_unsupported`)."),
    429: refusal("Too many requests from this till (`rate_limited`)."),
    500: refusal("A fault in the server (`internal_error`); nothing was written."),
    503: refusal("The server's database cannot be used right now (`database_unavailable`)."),
}


def unavailable() -> JSONResponse:
    """503 while the server's database cannot be used. The driver's words (host names,
    paths) go to the server's log, not to whoever asked."""
    return error(
        503,
        "database_unavailable",
        "The server's database cannot be used right now; retry later (resending is safe).",
    )


def create_server_app(
    store: ServerStore,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    rate: float = 200.0,
    burst: int = 400,
) -> ASGIApp:
    app = FastAPI(
        title="pos-loyalty central server",
        version=str(PROTOCOL_VERSION),
        responses=ERROR_RESPONSES,
    )
    limiter = RateLimiter(rate, burst)  # per till (by id) and per address before pairing
    failures = RateLimiter(min(rate, AUTH_FAILURE_RATE), min(burst, AUTH_FAILURE_BURST))

    @app.exception_handler(SyncError)
    async def _sync(_: Request, exc: SyncError) -> JSONResponse:
        return error(exc.status, exc.code, exc.message, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        if first.get("type") == "json_invalid" or not loc:
            return error(400, "malformed_request", "The body is not a valid JSON request.")
        return error(422, "invalid_request", f"{loc}: {first.get('msg', 'is invalid')}.")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return http_error(exc, {**HTTP_ERROR_CODES, 400: "malformed_request"})

    async def _database(_: Request, exc: Exception) -> JSONResponse:
        trouble = database_trouble(exc)
        if trouble is None:
            log.exception("internal error: %s", type(exc).__name__)
            return error(500, "internal_error", "The server failed; nothing was written.")
        # Not a bug: the database is down, gone or damaged. One line for the operator (no
        # traceback per request while it lasts); the till backs off and resends, which is
        # safe: a batch is one transaction and the server dedups on event id.
        log.error("database unavailable: %s", trouble)
        return unavailable()

    # Registered per class, not under ``Exception``: Starlette re-raises what reaches its
    # ``Exception`` handler so that the server logs a traceback, which an outage of the
    # database would turn into one per request.
    for cls in database_errors():
        app.add_exception_handler(cls, _database)

    def till(request: Request) -> TillAuth:
        # Buckets are keyed by what cannot be made up at will: the till's id once its
        # credential is checked; failed authentications by the client's address. (A valid
        # credential is served also from an address that also sends wrong ones: behind a
        # TLS proxy every till shares its address.)
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        try:
            if scheme.lower() != "bearer" or not credential:
                raise SyncError(
                    401, "credentials_required", "Send Authorization: Bearer <credential>."
                )
            auth = store.authenticate(credential.strip())
        except SyncError as exc:
            client = request.client.host if request.client else "?"
            if exc.status == 401 and not failures.allow("fail:" + client):
                raise SyncError(
                    429, "rate_limited", "Too many failed authentications; slow down."
                ) from None
            raise
        if not limiter.allow("till:" + auth.terminal_id):
            raise SyncError(429, "rate_limited", "Too many requests; slow down.")
        return auth

    @app.get("/v1/sync/health", response_model=None)
    def health(request: Request) -> dict[str, Any] | JSONResponse:
        client = request.client.host if request.client else "?"
        if not limiter.allow("health:" + client):  # no credentials: each probe reads
            raise SyncError(429, "rate_limited", "Too many health probes; slow down.")
        problem = store.database_problem()
        if problem is not None:
            log.error("health: database unavailable: %s", problem)
            return unavailable()
        return {"ok": True, "protocol": PROTOCOL_VERSION}

    @app.post("/v1/sync/pair")
    def pair(body: PairRequest, request: Request) -> PairResponse:
        client = request.client.host if request.client else "?"
        if not limiter.allow("pair:" + client):
            raise SyncError(429, "rate_limited", "Too many pairing attempts; slow down.")
        auth, credential = store.pair(body.token, body.terminal_id)
        return PairResponse(
            terminal_id=auth.terminal_id,
            merchant_id=auth.merchant_id,
            store_id=auth.store_id,
            credential=credential,
        )

    @app.post(
        "/v1/sync/push",
        response_model=PushResponse,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _PUSH_SCHEMA}},
            }
        },
    )
    async def push(request: Request, auth: TillAuth = Depends(till)) -> Response:
        # The body is validated straight from its bytes (one pass, no intermediate dict);
        # BodyLimit has bounded it already. The store encodes the answer itself
        # (``ingest_json``: the fields of ``PushResponse``), no model pass.
        raw = await request.body()
        try:
            body = PushRequest.model_validate_json(raw)
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors()]
            ) from None
        answer = await run_in_threadpool(store.ingest_json, auth, body)
        return Response(answer, media_type="application/json")

    @app.get("/v1/sync/pull")
    def pull(
        auth: TillAuth = Depends(till),
        after: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1000,
        scope: Annotated[str, Query(pattern="^(all|region)$")] = "all",
    ) -> PullResponse:
        return store.pull(auth, after, limit, scope)

    @app.get("/v1/sync/snapshot")
    def snapshot(
        auth: TillAuth = Depends(till),
        after: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=50_000)] = 10_000,
    ) -> SnapshotPage:
        return store.snapshot(auth, after, limit)

    @app.get(
        "/v1/sync/bootstrap",
        response_model=BootstrapPage,
        responses={200: {"content": {"application/json": {}}}},
    )
    def bootstrap(
        auth: TillAuth = Depends(till),
        at: Annotated[str | None, Query(max_length=200)] = None,
        after: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_SNAPSHOT_PAGE)] = 10_000,
        scope: Annotated[str, Query(pattern="^(all|region)$")] = "all",
    ) -> Response:
        # Assembled by the store from customers it encoded once (``sync.server.snapshots``).
        body = store.bootstrap_page(auth, at, after, limit, scope)
        return Response(body, media_type="application/json")

    @app.get("/v1/sync/config")
    def config(
        auth: TillAuth = Depends(till),
        have: Annotated[int, Query(ge=0, le=2**31)] = 0,
        running: Annotated[int | None, Query(ge=0, le=2**31)] = None,
        refused: Annotated[int | None, Query(ge=1, le=2**31)] = None,
        problem: Annotated[str | None, Query(max_length=300)] = None,
    ) -> ProgramConfig:
        # Always the authenticated till's own merchant. ``have``: the version the till holds
        # (or a newer one it refused: it is not sent again); at or above the current one the
        # answer is a small ``unchanged`` (each sync round asks, so this stays cheap).
        # ``running`` / ``refused`` / ``problem``: what the till runs and what it refused
        # and why, kept for the operator (``server terminals``); a till that sends only
        # ``have`` (an older release) is taken to run that version.
        store.note_round(auth, have if running is None else running, refused, problem)
        version, text = store.program_config(auth.merchant_id)
        if version <= have:
            return ProgramConfig(
                version=version, config="", merchant_id=auth.merchant_id, unchanged=True
            )
        return ProgramConfig(version=version, config=text, merchant_id=auth.merchant_id)

    # Outermost: a fault no handler took is answered 500 and logged once, with its
    # traceback (Starlette's own handler would re-raise to uvicorn, which logs it again).
    app.add_middleware(
        InternalErrors,
        message="The server failed; nothing was written.",
        log=log,
        traceback=True,
    )
    return BodyLimit(app, max_body_bytes)  # shared with the plugin API
