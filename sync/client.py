"""The till's sync client: one round = push own events, pull other tills' events.

Pushes go in ``seq`` order in batches; ``acked_seq`` moves only after the server's answer is
committed locally (``Replica.record_answers``). Pulls page after the cursor, and each page is
applied in one local transaction together with the new cursor. Any failure in between leaves
the ledger as it was before that step: the next round resends or re-pulls, and the server
and ``apply_pulled`` make the repeat a no-op.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import httpx
import orjson
from pydantic import BaseModel

from pos_loyalty.config import ConfigError
from pos_loyalty.ledger.replication import (
    FLAGGED_REASONS,
    Answer,
    Applied,
    Credentials,
    PulledEventRefused,
    Replica,
    StoredEvent,
    Stub,
)
from sync.protocol import (
    MAX_BATCH,
    PROTOCOL_VERSION,
    PairResponse,
    ProgramConfig,
    PullResponse,
    PushResponse,
    WireEvent,
)

log = logging.getLogger("sync.client")

R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)

# Pushes go in the largest batch the protocol takes (1,000 events, ~0.6 MB): a till
# catching up after a weekend offline spends far less per event than in batches of 500
# (10,000 events: ~0.75-0.83 s against ~0.9 s on the bench machine; bench/README.md).
DEFAULT_BATCH = MAX_BATCH
# ... and at most this many bytes of JSON each, well below the server's default body limit
# (``pos-loyalty server --max-body``, 8 MiB: half of it): 1,000 ordinary sales take ~1.3 MB
# (a cap of 1 MiB cut them into batches of ~780: a catch-up of 10,000 sales took 0.94-1.33 s
# against 0.80-0.96 s with this cap and 0.89-0.90 s with none, bench/README.md), but sales
# of big baskets (150 lines: ~18 KB each) would make a 1,000-event batch too large for any
# server. A server with a lower limit answers 413; the till then halves its batches (down
# to one event, which is refused by name if even it is too large).
DEFAULT_BATCH_BYTES = 4 * 1024 * 1024
# Batches on the wire at once: while the server stores one (its database work), the next is
# sent, decoded and hash-checked (bench/README.md, "Sixth pass").
PIPELINE = 2
DEFAULT_PAGE = 2000


class SyncFailed(Exception):
    """A round could not complete. ``reachable`` is False when the server could not be
    reached (network, timeout, 5xx): retry later. True: it refused (fix something)."""

    def __init__(self, message: str, *, reachable: bool, code: str = "unreachable") -> None:
        super().__init__(message)
        self.reachable = reachable
        self.code = code


@dataclass
class RoundResult:
    pushed: int = 0
    accepted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    pulled: Applied = field(default_factory=Applied)
    programs_applied: int | None = None  # a newer program configuration version, applied


class ProgramSink(Protocol):
    """Where the till keeps the server's program configuration
    (``pos_loyalty.server_programs.ServerPrograms``)."""

    def have(self, merchant_id: str) -> int:
        """The version this till holds for the merchant (0: none)."""
        ...

    def accept(self, merchant_id: str, version: int, text: str) -> Any:
        """Check and store a newer version; raises ConfigError when it does not pass."""
        ...


def _wire(e: StoredEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "terminal_id": e.terminal_id,
        "seq": e.seq,
        "kind": e.kind,
        "at": e.at,
        "customer_id": e.customer_id,
        "key": e.key,
        "payload": e.payload,
        "prev_hash": e.prev_hash.hex(),
        "hash": e.hash.hex(),
    }


def _stored(w: WireEvent) -> StoredEvent:
    return StoredEvent(
        w.id,
        w.terminal_id,
        w.seq,
        w.kind,
        w.at,
        w.customer_id,
        w.key,
        w.payload,
        bytes.fromhex(w.prev_hash),
        bytes.fromhex(w.hash),
    )


def _refusal(response: httpx.Response) -> SyncFailed:
    try:
        body = response.json()["error"]
        code, message = str(body["code"]), str(body["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", f"HTTP {response.status_code}"
    if response.status_code >= 500 or response.status_code == 429:
        return SyncFailed(f"server answered {response.status_code}: {message}", reachable=False)
    return SyncFailed(f"server refused ({code}): {message}", reachable=True, code=code)


def pair(
    server_url: str,
    token: str,
    *,
    terminal_id: str | None = None,
    http: httpx.Client | None = None,
    timeout: float = 10.0,
) -> Credentials:
    """Exchange a one-time pairing token for this till's credentials. ``terminal_id``: this
    till's ``terminal.id``; the server refuses a token made for another terminal without
    using it (``terminal_mismatch``), so the till can be fixed and paired with the same
    token. (A server of an older release does not know the field: the request is sent
    again without it, and the caller checks the answer's ``terminal_id``.)"""
    client = http or httpx.Client(timeout=timeout)
    url = server_url.rstrip("/") + "/v1/sync/pair"
    body: dict[str, Any] = {"protocol": PROTOCOL_VERSION, "token": token}
    if terminal_id is not None:
        body["terminal_id"] = terminal_id
    try:
        response = client.post(url, json=body)
        if terminal_id is not None and _older_server(response, "terminal_id"):
            del body["terminal_id"]
            response = client.post(url, json=body)
    except httpx.HTTPError as exc:
        raise SyncFailed(f"cannot reach {server_url}: {exc}", reachable=False) from None
    finally:
        if http is None:
            client.close()
    if response.status_code != 200:
        raise _refusal(response)
    answer = PairResponse.model_validate_json(response.content)
    return Credentials(
        server_url.rstrip("/"),
        answer.terminal_id,
        answer.merchant_id,
        answer.store_id,
        answer.credential,
    )


def _older_server(response: httpx.Response, field: str) -> bool:
    """Whether ``response`` refuses ``field`` as unknown (a server of an older release)."""
    if response.status_code != 422 or _code(response) != "invalid_request":
        return False
    try:
        message = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return False
    return message.startswith(f"{field}:") and "xtra" in message


class SyncClient:
    """Push and pull for one till over HTTP(S). Not thread-safe: one per worker."""

    def __init__(
        self,
        replica: Replica,
        credentials: Credentials,
        *,
        http: httpx.Client | None = None,
        timeout: float = 30.0,
        batch: int = DEFAULT_BATCH,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        page: int = DEFAULT_PAGE,
        progress: Callable[[str, int], None] | None = None,
        programs: ProgramSink | None = None,
        region_only: bool = False,
    ) -> None:
        self.replica = replica
        # Pull only the customers of this till's region (``[sync] region_only``; a till
        # bootstrapped with a region snapshot keeps pulling that way whatever the setting).
        self.region_only = region_only
        self.programs = programs
        # The version this till holds (as of the last fetch); 0: none, its own file's.
        self.programs_version = programs.have(credentials.merchant_id) if programs else 0
        self.programs_problem: str | None = None  # why the server's newest was refused
        self._refused_version = 0
        self.credentials = credentials
        self.base = credentials.server_url.rstrip("/")
        self._own_http = http is None
        self.http = http or httpx.Client(timeout=timeout, verify=True)
        self.batch = batch
        # Bytes per push body; halved on each 413 (kept for this client's life).
        self.batch_bytes = batch_bytes
        self.page = page
        self.progress = progress
        self._headers = {"authorization": f"Bearer {credentials.credential}"}

    def close(self) -> None:
        if self._own_http:
            self.http.close()

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            headers = {**self._headers, **kw.pop("headers", {})}
            response = self.http.request(method, self.base + path, headers=headers, **kw)
        except httpx.HTTPError as exc:
            raise SyncFailed(
                f"cannot reach {self.base}: {type(exc).__name__}: {exc}", reachable=False
            ) from None
        return response

    def push(self) -> RoundResult:
        """Push every unacknowledged own event, in seq order, in batches, with up to
        ``PIPELINE`` batches on the wire at once: while the server stores one, the next is
        sent, read and checked (the server takes a till's batches one at a time, in the
        order its row lock is granted, and refuses one that does not follow what it holds
        with ``409 sequence_gap``, writing nothing). Answers are recorded in seq order.
        A batch is at most ``batch`` events and ``batch_bytes`` bytes; one the server finds
        too large (413) is sent again in halves."""
        result = RoundResult()
        # (batch, its body, its answer to come, whether an earlier batch was on the wire
        # when sent)
        inflight: deque[tuple[list[StoredEvent], bytes, Future[httpx.Response], bool]] = deque()
        after: int | None = None  # the last seq sent; None: read from the acknowledged seq
        ahead: list[StoredEvent] = []  # the full batch after ``after``, read while waiting
        while True:
            while len(inflight) < PIPELINE:
                batch = ahead or self._next_batch(after)
                ahead = []
                if not batch:
                    break
                batch, body = self._encode(batch)
                inflight.append((batch, body, _in_background(self._send, body), bool(inflight)))
                after = batch[-1].seq
            if not inflight:
                return result
            # Read the next batch while the server works, so that it goes out as soon as an
            # answer is recorded. Only a full one is kept: recording an answer may book
            # local-only events after the head, which a short read would leave behind.
            following = self._next_batch(after)
            ahead = following if len(following) == self.batch else []
            sent, body, answered, behind = inflight.popleft()
            # On an error (unreachable, refused, an answer cut) the round ends here; a batch
            # still on the wire is left to finish or fail on its own (its answer is not
            # recorded, and the next round sends it again: the server answers a resend as it
            # did the first time).
            response = answered.result()
            too_large = response.status_code == 413
            if too_large or (response.status_code == 409 and _code(response) == "sequence_gap"):
                for _, _, later, _ in inflight:  # they follow this one: refused too
                    later.exception()
                inflight.clear()
                after, ahead = None, []  # send again from the acknowledged seq
                if too_large:
                    self._smaller_batches(sent, body, response)
                elif not behind:
                    # Nothing of ours was before it on the wire: the server holds our chain
                    # only up to an earlier seq (it was restored from a backup). (When
                    # behind, it took the lock before the batch it follows.)
                    head = response.json()["error"].get("head") or {}
                    log.warning("server holds our chain only up to seq %s: resending", head)
                    self.replica.rewind(int(head.get("seq", 0)))
                continue
            self._record(sent, response, result)

    def _next_batch(self, after: int | None) -> list[StoredEvent]:
        return self.replica.unsynced(self.batch, after=after)

    def _encode(self, batch: list[StoredEvent]) -> tuple[list[StoredEvent], bytes]:
        """The push body for the longest head of ``batch`` (at least one event) within
        ``batch_bytes``, and that head. orjson: compact JSON (~10% fewer bytes to send and
        parse than with spaces), non-ASCII as UTF-8 rather than \\u escapes (the same values
        once parsed), and several times faster than json.dumps for a 1,000-event batch."""
        prefix = (
            orjson.dumps({"protocol": PROTOCOL_VERSION, "terminal_id": self.replica.terminal_id})[
                :-1
            ]
            + b',"events":['
        )
        parts: list[bytes] = []
        size = len(prefix) + 2
        for e in batch:
            part = orjson.dumps(_wire(e))
            size += len(part) + (1 if parts else 0)
            if parts and size > self.batch_bytes:
                break
            parts.append(part)
        return batch[: len(parts)], prefix + b",".join(parts) + b"]}"

    def _smaller_batches(
        self, sent: list[StoredEvent], body: bytes, response: httpx.Response
    ) -> None:
        """The server refused ``body`` as too large (413): send batches of half its size
        from now on; raise SyncFailed (``event_too_large``, naming it) when it held one
        event only, which no batch size can get through."""
        try:
            limit = str(response.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            limit = "its body limit"
        if len(sent) == 1:
            e = sent[0]
            raise SyncFailed(
                f"event {e.id} (seq {e.seq}, {e.kind}) takes {len(body)} bytes to send, "
                f"more than the server accepts ({limit.rstrip('.')}): raise the server's "
                "--max-body; the events after it wait",
                reachable=True,
                code="event_too_large",
            )
        self.batch_bytes = max(1, len(body) // 2)
        log.warning(
            "the server refused a push of %d events (%d bytes) as too large: sending at "
            "most %d bytes per batch",
            len(sent),
            len(body),
            self.batch_bytes,
        )

    def _send(self, body: bytes) -> httpx.Response:
        return self._request(
            "POST",
            "/v1/sync/push",
            content=body,
            headers={"content-type": "application/json"},
        )

    def _record(
        self, sent: list[StoredEvent], response: httpx.Response, result: RoundResult
    ) -> None:
        """Record the server's answer to ``sent`` (one local transaction)."""
        if response.status_code != 200:
            raise _refusal(response)
        answer = _answer(PushResponse, response)
        answers = [
            Answer(r.id, r.seq, r.status.value, r.reason, r.message, r.winner_payload)
            for r in answer.results
        ]
        self.replica.record_answers(sent, answers, answer.head.epoch)
        result.pushed += len(sent)
        for a in answers:
            if a.reason in FLAGGED_REASONS:
                result.conflicts += 1  # kept and counted, but flagged for an operator
            if a.status == "accepted":
                result.accepted += 1
            elif a.status == "duplicate":
                result.duplicates += 1
            else:
                result.conflicts += 1
        if self.progress:
            self.progress("push", result.pushed)

    def pull(self) -> Applied:
        """Apply every event of the merchant's other tills after our cursor."""
        from .bootstrap import bootstrap, pending, scope_of

        if pending(self.replica.ledger):  # an interrupted bootstrap: finish it first
            bootstrap(self.replica, self.credentials, http=self.http)
        scope = scope_of(self.replica.ledger, self.region_only)
        total = Applied()
        reset = False
        head_checked = False
        while True:
            cursor = self.replica.state().cursor
            params: dict[str, Any] = {"limit": self.page}
            if scope != "all":
                params["scope"] = scope
            if cursor:
                params["after"] = cursor
            response = self._request("GET", "/v1/sync/pull", params=params)
            if response.status_code == 409 and _code(response) == "cursor_ahead" and not reset:
                # The server was restored from a backup after we had pulled further: the
                # positions after the backup's last one go to new events. Pull again from
                # the start (or our snapshot): what we hold already is skipped by event id.
                error = response.json()["error"]
                start, moved = self.replica.reset_cursor(
                    f"the server refused it: {error['message']}"
                )
                if not moved:  # our snapshot's own position: taken after the backup
                    raise SyncFailed(
                        f"server refused (cursor_ahead): this till was bootstrapped from the "
                        f"server's snapshot {start}, which the server no longer holds "
                        "(restored from an older backup): give the till a new ledger and "
                        "bootstrap it again (docs/sync.md, Restoring the server)",
                        reachable=True,
                        code="cursor_ahead",
                    )
                log.warning(
                    "pull cursor %s refused by the server (%s): pulling again from %s",
                    cursor,
                    error["message"],
                    start or "the start",
                )
                reset = True
                continue
            if response.status_code != 200:
                raise _refusal(response)
            page = _answer(PullResponse, response)
            if page.head is not None and not head_checked:
                head_checked = True
                if self.replica.server_behind(
                    page.head.seq, "the server lost events it had acknowledged"
                ):
                    log.warning(
                        "the server holds our chain only up to seq %d (restored from a "
                        "backup?): pushing the events after it again",
                        page.head.seq,
                    )
            try:
                applied = self._apply_page(page)
            except PulledEventRefused as exc:
                raise SyncFailed(
                    f"{exc}; nothing from that page was applied",
                    reachable=True,
                    code="pulled_event_refused",
                ) from None
            total.applied += applied.applied
            total.skipped += applied.skipped
            total.conflicts += applied.conflicts
            if self.progress:
                self.progress("pull", total.applied)
            if not page.more:
                return total

    def _apply_page(self, page: PullResponse) -> Applied:
        return self.replica.apply_pulled(
            (_stored(p.event) for p in page.events),
            (
                Stub(
                    s.terminal_id,
                    s.seq,
                    s.id,
                    bytes.fromhex(s.prev_hash),
                    bytes.fromhex(s.hash),
                )
                for s in page.stubs
            ),
            page.cursor,
        )

    def fetch_programs(self) -> int | None:
        """Fetch the merchant's program configuration when the server has a newer version
        than this till (one small request: the till sends the version it has and the server
        answers ``unchanged``). A newer one is checked and stored by the sink, which switches
        the running service. Returns the version applied, or None.

        A configuration that fails the till's validation (a server of a newer release, a
        damaged database) is refused: logged, kept in ``programs_problem`` (sync status),
        nothing changes and the till sells on with what it had; that version is not asked
        for again by this worker. Raises SyncFailed when the server cannot be asked."""
        if self.programs is None:
            return None
        merchant = self.credentials.merchant_id
        self.programs_version = held = self.programs.have(merchant)
        answer = self._ask_config()
        if answer.unchanged or answer.version <= held:
            if answer.version < held:
                log.warning(
                    "the server holds program configuration v%d, older than our v%d: keeping ours",
                    answer.version,
                    held,
                )
            return None
        if answer.merchant_id not in (None, merchant):
            self._refuse(answer.version, f"it belongs to merchant {answer.merchant_id!r}")
            return None
        try:
            stored = self.programs.accept(merchant, answer.version, answer.config)
        except ConfigError as exc:
            self._refuse(answer.version, str(exc))
            return None
        if stored is None:
            return None
        self.programs_version = answer.version
        self.programs_problem = None
        log.info("program configuration v%d applied", answer.version)
        self._report_programs()
        return answer.version

    def _ask_config(self) -> ProgramConfig:
        """``GET /v1/sync/config``: the server's newest configuration unless this till has
        it (or refused it); the request also tells the server what this till runs and what
        it refused and why (``server terminals``)."""
        held = self.programs_version
        params: dict[str, Any] = {"have": max(held, self._refused_version), "running": held}
        if self._refused_version > held and self.programs_problem:
            params.update(refused=self._refused_version, problem=self.programs_problem[:300])
        response = self._request("GET", "/v1/sync/config", params=params)
        if response.status_code != 200:
            raise _refusal(response)
        return _answer(ProgramConfig, response)

    def _report_programs(self) -> None:
        """Tell the server now what changed (a version applied or refused), not at the next
        round: an operator watching ``server terminals`` after publishing sees it at once.
        The answer is "unchanged" (this till asks from what it now holds or refused). A
        failure here changes nothing on the till: the next round reports it again."""
        try:
            self._ask_config()
        except SyncFailed as exc:
            log.warning("could not report the program configuration state yet: %s", exc)

    def _refuse(self, version: int, why: str) -> None:
        self._refused_version = version
        self.programs_problem = f"program configuration v{version} refused: {why}"
        log.error("%s; keeping v%d", self.programs_problem, self.programs_version)
        self._report_programs()

    def round(self) -> RoundResult:
        result = self.push()
        try:
            result.pulled = self.pull()
        except SyncFailed as exc:
            if exc.code == "pulled_event_refused":
                # A page this till refuses must not also hold back the program
                # configuration: fetched all the same, then the round fails as it must.
                with contextlib.suppress(SyncFailed):
                    self.fetch_programs()
            raise
        # Booked reconciliations (superseded expiries) are own events too: push them now.
        extra = self.push()
        result.pushed += extra.pushed
        result.accepted += extra.accepted
        result.programs_applied = self.fetch_programs()
        return result


def _in_background(fn: Callable[..., R], *args: Any) -> Future[R]:
    """``fn(*args)`` in a daemon thread, its outcome as a ``Future``. (Not a
    ``ThreadPoolExecutor``: its threads are joined when the interpreter exits, so a till
    shutting down mid-push would wait for an answer nobody records, up to the timeout; and it
    refuses new work once shutdown has begun, where the embedded sync thread may still push.)
    """
    future: Future[R] = Future()

    def run() -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to whoever waits for the answer
                future.set_exception(exc)

    threading.Thread(target=run, name="sync-push", daemon=True).start()
    return future


def _answer(model: type[M], response: httpx.Response) -> M:
    """The server's 200 answer as ``model``; SyncFailed (unreachable: try again) when it does
    not parse, as when the connection was cut mid-body."""
    try:
        return model.model_validate_json(response.content)
    except ValueError:
        raise SyncFailed("the server's answer was cut or garbled", reachable=False) from None


def _code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""
