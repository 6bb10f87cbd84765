"""The plugin API (DESIGN.md): JSON over HTTP on localhost, versioned under /v1.

Thin: validates requests (pydantic), calls the service, maps refusals to
``{"error": {"code", "message"}}`` with a 4xx status. Nothing here decides loyalty.
Card codes never reach a log: the access log is off, and our own request log names the
route, not the path (a path can hold what a cashier scanned).
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from sqlalchemy.exc import OperationalError as SQLAlchemyOperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pos_loyalty import qr
from pos_loyalty.asgi import (
    HTTP_ERROR_CODES,
    BodyLimit,
    InternalErrors,
    error,
    http_error,
    refusal,
)
from pos_loyalty.domain.basket import Basket, BasketLine, Redemption, WalletPayment
from pos_loyalty.domain.errors import DomainError
from pos_loyalty.domain.refund import RefundRequestLine
from pos_loyalty.ledger.store import LedgerDamaged, LedgerError
from pos_loyalty.service import Profile, RefundRequest, SaleRequest, Service
from pos_loyalty.sse import events_router

log = logging.getLogger("pos_loyalty.api")

Id = Annotated[StrictStr, Field(min_length=1, max_length=128)]
Name = Annotated[StrictStr, Field(min_length=1, max_length=64)]
# The moment a request is for (tests and replays; the till's clock otherwise). Checked by
# ``parse_at`` (any ISO 8601 time with a UTC offset); declared as RFC 3339 for clients.
DATE_TIME: dict[str, Any] = {"format": "date-time"}
AT_DOC = (
    "ISO 8601 time with a UTC offset, e.g. 2026-11-22T10:15:00+01:00, between the years 2000 "
    "and 2200; default: now."
)
At = Annotated[StrictStr, Field(max_length=64, description=AT_DOC, json_schema_extra=DATE_TIME)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LineIn(_In):
    sku: Name
    category: Annotated[StrictStr, Field(max_length=64)] | None = None
    qty: Annotated[StrictInt, Field(ge=1, le=10_000)]
    unit_price: Annotated[StrictInt, Field(ge=0, le=100_000_000)]


class RedeemIn(_In):
    program: Name
    points: Annotated[StrictInt, Field(ge=1, le=1_000_000_000)]


class WalletIn(_In):
    program: Name
    amount: Annotated[StrictInt, Field(ge=1, le=100_000_000)]


class CouponIn(_In):
    program: Name
    # The POS's idempotency key: a retry with it answers the first result, writes nothing.
    request_id: Id | None = None
    customer_id: Annotated[StrictStr, Field(min_length=1, max_length=36)] | None = None
    at: At | None = None


class PayoutIn(_In):
    program: Name
    # The POS's idempotency key: a retry with it answers the first result, writes nothing.
    request_id: Id | None = None
    amount: Annotated[StrictInt, Field(ge=1, le=100_000_000)]
    at: At | None = None


class BasketIn(_In):
    receipt_id: Id | None = None
    card: Annotated[StrictStr, Field(min_length=1, max_length=256)] | None = None
    at: At | None = None
    lines: Annotated[list[LineIn], Field(min_length=1, max_length=500)]
    # promo codes (up to 32 characters) and signed coupon codes (137 characters)
    codes: Annotated[list[Annotated[StrictStr, Field(max_length=160)]], Field(max_length=20)] = []
    redeem: Annotated[list[RedeemIn], Field(max_length=10)] = []
    flags: Annotated[list[Name], Field(max_length=20)] = []
    wallet: Annotated[list[WalletIn], Field(max_length=10)] = []


class EnrolIn(_In):
    name: Annotated[StrictStr, Field(max_length=200)] | None = None
    email: Annotated[StrictStr, Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    phone: Annotated[StrictStr, Field(max_length=32, pattern=r"^\+?[0-9 ()-]{3,31}$")] | None = None
    consents: Annotated[dict[Name, StrictBool], Field(max_length=20)] = {}
    referral_code: Annotated[StrictStr, Field(max_length=64)] | None = None
    tags: Annotated[list[Name], Field(max_length=20)] = []
    at: At | None = None


class RefundLineIn(_In):
    sku: Name
    qty: Annotated[StrictInt, Field(ge=1, le=10_000)]


class RefundIn(_In):
    refund_id: Id
    receipt_id: Id
    lines: Annotated[list[RefundLineIn], Field(min_length=1, max_length=500)] | None = None
    full: StrictBool = False
    at: At | None = None


class AdjustIn(_In):
    program: Name
    # The POS's idempotency key: a retry with it answers the first result, writes nothing.
    request_id: Id | None = None
    delta: Annotated[StrictInt, Field(ge=-1_000_000_000, le=1_000_000_000)]
    reason: Annotated[StrictStr, Field(min_length=1, max_length=500)]
    at: At | None = None


class BlockIn(_In):
    reason: Annotated[StrictStr, Field(min_length=1, max_length=500)] = "blocked at the till"
    at: At | None = None


class LookupIn(_In):
    code: Annotated[StrictStr, Field(min_length=1, max_length=512)]
    at: At | None = None


# The answers any call may give besides its own (FastAPI's default 422 schema is replaced:
# a validation error has the one error shape too). Declared for every route, so an
# integrator's generated client knows them; a GET never sees a 413, but may.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: refusal("The body is not JSON, or not a JSON object (`malformed_json`)."),
    404: refusal("Unknown card, customer, receipt or route (`unknown_card`, ...)."),
    409: refusal("Conflicts with what the ledger holds (`receipt_conflict`, a blocked card)."),
    413: refusal("The body is larger than the configured limit (`body_too_large`)."),
    422: refusal("A field is invalid, or the loyalty rules refuse it (`insufficient_points`)."),
    500: refusal("A fault at the till (`internal_error`); nothing was changed."),
    503: refusal("The ledger is busy or damaged (`ledger_busy`, `ledger_damaged`)."),
}


def _image(kind: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI answer of a route that sends an image (not JSON)."""
    return {
        200: {
            "description": "The card's code as a QR image.",
            "content": {f"image/{kind}": {"schema": {"type": "string", "format": "binary"}}},
        }
    }


def parse_at(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise DomainError(
            "invalid_at",
            "`at` must be an ISO 8601 time with offset, e.g. 2026-11-22T10:15:00+01:00.",
        ) from None
    if parsed.tzinfo is None:
        raise DomainError("invalid_at", "`at` needs a UTC offset, e.g. 2026-11-22T10:15:00+01:00.")
    return parsed


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return 400, "malformed_json", "The request body is not valid JSON."
    loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    msg = first.get("msg", "is invalid")
    if not loc:  # the body as a whole: missing, or not a JSON object
        return 400, "malformed_json", "The request body must be a JSON object."
    return 422, "invalid_request", f"{loc or 'request'}: {msg}."


def create_app(service: Service, *, status: Any = None, bus: Any = None) -> FastAPI:
    """The plugin API over ``service``. ``status`` may supply extra health fields (sync)."""
    app = FastAPI(
        title="pos-loyalty plugin API",
        version="1",
        description="Loyalty for any till: quote, commit and refund baskets; look up cards.",
        responses=ERROR_RESPONSES,
    )

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        response = error(exc.status, exc.code, exc.message)
        if exc.detail:  # e.g. minimum_not_met carries "missing": the amount still missing
            return JSONResponse(
                {"error": {"code": exc.code, "message": exc.message, **exc.detail}},
                status_code=exc.status,
            )
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error(*_validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return http_error(exc, HTTP_ERROR_CODES)

    @app.exception_handler(sqlite3.OperationalError)
    @app.exception_handler(SQLAlchemyOperationalError)
    async def _busy(_: Request, exc: Exception) -> JSONResponse:
        # e.g. "database is locked": another writer held the ledger past the busy timeout.
        log.warning("ledger busy: %s", type(exc).__name__)
        return error(503, "ledger_busy", "The till's ledger is busy; try again in a moment.")

    told: set[str] = set()  # ledger troubles already logged: once each, not per request

    def refused(exc: LedgerError, **extra: Any) -> JSONResponse:
        if str(exc) not in told:
            told.add(str(exc))
            log.error("ledger unavailable: %s", exc)
        if isinstance(exc, LedgerDamaged):
            return error(
                503,
                "ledger_damaged",
                "The till's ledger file is damaged; nothing was changed. Carry on without "
                "loyalty and have the file checked (`pos-loyalty ledger verify`).",
                **extra,
            )
        return error(
            503, "ledger_unavailable", "The till's ledger cannot be used right now.", **extra
        )

    @app.exception_handler(LedgerError)
    async def _ledger(_: Request, exc: LedgerError) -> JSONResponse:
        return refused(exc)

    @app.get("/v1/health")
    def health() -> Any:
        try:
            out = service.health()
        except LedgerError as exc:
            # A monitor polling health must still learn why (the file check's finding) and
            # the sync state: the 503 carries what can be told without the ledger.
            partial = service.health_without_ledger()
            if status is not None:
                partial.update(status())
            return refused(exc, health=partial)
        if status is not None:
            out.update(status())
        return out

    @app.post("/v1/customers", status_code=201)
    def enrol(body: EnrolIn) -> dict[str, Any]:
        result = service.enrol(
            Profile(
                body.name,
                body.email,
                body.phone,
                dict(body.consents),
                body.referral_code,
                tuple(body.tags),
            ),
            parse_at(body.at),
        )
        code = result["card"]["code"]
        result["card"]["qr_svg"] = qr.qr_svg(code)
        result["card"]["qr_png"] = f"/v1/cards/{code}/qr.png"
        return result

    @app.post("/v1/coupons", status_code=201)
    def issue_coupon(body: CouponIn) -> dict[str, Any]:
        return service.issue_coupon(
            body.program, body.customer_id, parse_at(body.at), request_id=body.request_id
        )

    @app.post("/v1/customers/{customer_id}/wallet/payout")
    def payout(customer_id: str, body: PayoutIn) -> dict[str, Any]:
        return service.wallet_payout(
            customer_id, body.program, body.amount, parse_at(body.at), request_id=body.request_id
        )

    @app.get("/v1/customers/{customer_id}")
    def customer(
        customer_id: str,
        limit: Annotated[int, Query(ge=1, le=200)] = 20,
        before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    ) -> dict[str, Any]:
        return service.customer(customer_id, limit=limit, before=before)

    @app.post("/v1/customers/{customer_id}/cards", status_code=201)
    def issue_card(customer_id: str) -> dict[str, Any]:
        return service.issue_card(customer_id)

    @app.post("/v1/customers/{customer_id}/adjustments", status_code=201)
    def adjust(customer_id: str, body: AdjustIn) -> dict[str, Any]:
        return service.adjust(
            customer_id,
            body.program,
            body.delta,
            body.reason,
            parse_at(body.at),
            request_id=body.request_id,
        )

    # Before ``/v1/cards/{code}``: declared after it, ``/v1/cards/lookup`` would match that
    # route first for any other method (405 with ``Allow: GET``, not ``POST``).
    @app.post("/v1/cards/lookup")
    def card_lookup(body: LookupIn) -> dict[str, Any]:
        """The same as ``GET /v1/cards/{code}`` for scans that don't fit in a URL (tracks)."""
        return service.lookup(body.code, parse_at(body.at))

    @app.get("/v1/cards/{code}")
    def card(
        code: str,
        at: Annotated[
            str | None, Query(max_length=64, description=AT_DOC, json_schema_extra=DATE_TIME)
        ] = None,
    ) -> dict[str, Any]:
        return service.lookup(code, parse_at(at))

    @app.get("/v1/cards/{code}/qr.png", response_class=Response, responses=_image("png"))
    def card_png(code: str) -> Response:
        service.lookup(code)
        return Response(qr.qr_png(service.normalise_scan(code)), media_type="image/png")

    @app.get("/v1/cards/{code}/qr.svg", response_class=Response, responses=_image("svg+xml"))
    def card_svg(code: str) -> Response:
        service.lookup(code)
        return Response(qr.qr_svg(service.normalise_scan(code)), media_type="image/svg+xml")

    @app.post("/v1/cards/{code}/block")
    def block(code: str, body: BlockIn) -> dict[str, Any]:
        return service.block_card(code, body.reason, parse_at(body.at))

    @app.post("/v1/cards/{code}/replace", status_code=201)
    def replace(code: str, body: BlockIn) -> dict[str, Any]:
        return service.replace_card(code, body.reason, parse_at(body.at))

    @app.post("/v1/baskets/quote")
    def quote(body: BasketIn) -> dict[str, Any]:
        return service.quote(sale_request(body))

    @app.post("/v1/baskets/commit")
    def commit(body: BasketIn) -> dict[str, Any]:
        if body.receipt_id is None:
            raise DomainError("receipt_id_required", "A commit needs the POS's `receipt_id`.")
        return service.commit(sale_request(body))

    @app.post("/v1/refunds")
    def refund(body: RefundIn) -> dict[str, Any]:
        if body.full == (body.lines is not None):
            raise DomainError("invalid_request", "Give exactly one of `lines` or `full: true`.")
        lines = None
        if body.lines is not None:
            lines = tuple(RefundRequestLine(ln.sku, ln.qty) for ln in body.lines)
        return service.refund(
            RefundRequest(
                body.refund_id,
                body.receipt_id,
                lines,
                parse_at(body.at),
                body.model_dump(mode="json"),
            )
        )

    app.include_router(  # GET /v1/events (SSE)
        events_router(bus, hello=service.health), responses=ERROR_RESPONSES
    )
    app.add_middleware(BodyLimit, limit=service.settings.max_body_bytes)
    app.add_middleware(
        InternalErrors,
        message="Something went wrong at the till; nothing was changed.",
        log=log,
    )
    return app


def sale_request(body: BasketIn) -> SaleRequest:
    basket = Basket(
        lines=tuple(BasketLine(ln.sku, ln.qty, ln.unit_price, ln.category) for ln in body.lines),
        codes=tuple(body.codes),
        redeem=tuple(Redemption(r.program, r.points) for r in body.redeem),
        flags=tuple(body.flags),
        wallet=tuple(WalletPayment(w.program, w.amount) for w in body.wallet),
    )
    return SaleRequest(
        basket, body.card, body.receipt_id, parse_at(body.at), body.model_dump(mode="json")
    )
