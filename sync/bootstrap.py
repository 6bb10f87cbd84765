"""Bootstrap a new till from a server snapshot instead of replaying every event.

``bootstrap()`` asks ``GET /v1/sync/bootstrap`` for a full snapshot as of one server
position (the *cursor*), page by page (customers in id order), and loads each page into the
ledger's projection tables in bulk, one local transaction per page, keeping the page as part
of the till's *baseline* (``pos_loyalty.ledger.snapshot``). After the last page it checks the
digest of everything stored against the server's, sets every till's chain head and the pull
cursor to the snapshot's, and marks the baseline complete; normal pulls continue from there.

- Only an empty ledger (no events, customers, cards, balances, pull cursor) is bootstrapped;
  anything else is refused with :class:`BootstrapRefused` and nothing is changed.
- A crash or error between pages leaves the baseline ``loading`` with the pages loaded so
  far: running ``bootstrap()`` again resumes after the last loaded customer, from the same
  snapshot (the server can rebuild it for the same cursor). If the server can no longer
  serve that cursor (restored from a backup), or the digest does not match, the loaded part
  is discarded and the bootstrap starts again. Until the baseline is complete, ``ledger
  verify`` reports it and the sync client resumes the bootstrap before pulling, so a
  half-loaded ledger never passes for a complete one.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from pos_loyalty.ledger.replication import Credentials, Replica
from pos_loyalty.ledger.snapshot import (
    COMPLETE,
    Baseline,
    BootstrapRefused,
    baseline,
    begin_baseline,
    bulk,
    discard_baseline,
    emptiness_problem,
    finish_baseline,
    load_page,
)
from pos_loyalty.ledger.store import Ledger
from sync.protocol import BootstrapPage

from .client import SyncFailed, _answer, _code, _refusal

log = logging.getLogger("sync.bootstrap")

DEFAULT_SNAPSHOT_PAGE = 10_000

__all__ = ["BootstrapRefused", "BootstrapResult", "bootstrap", "pending"]


@dataclass(frozen=True)
class BootstrapResult:
    cursor: str
    customers: int
    pages: int
    resumed: bool
    seconds: float


def pending(ledger: Ledger) -> bool:
    """Whether a bootstrap of this ledger was started and not finished."""
    with ledger.reader() as tx:
        known = baseline(tx.conn)
    return known is not None and known.status != COMPLETE


def check_empty(ledger: Ledger) -> None:
    """Raise BootstrapRefused unless ``bootstrap()`` may start or resume on this ledger."""
    with ledger.reader() as tx:
        known = baseline(tx.conn)
        problem = emptiness_problem(tx.conn) if known is None else None
    if known is not None and known.status == COMPLETE:
        raise BootstrapRefused(f"this ledger was bootstrapped already (at {known.cursor})")
    if problem is not None:
        raise BootstrapRefused(f"{problem}: only an empty ledger can start from a snapshot")


def bootstrap(
    replica: Replica,
    credentials: Credentials,
    *,
    http: httpx.Client | None = None,
    timeout: float = 120.0,
    page: int = DEFAULT_SNAPSHOT_PAGE,
    region_only: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> BootstrapResult:
    """Load the server's snapshot into this (empty) till's ledger, or finish loading it.

    ``progress(customers loaded, customers in the snapshot)`` is called after each page.
    Raises BootstrapRefused (the ledger is not empty), SyncFailed (the server could not be
    reached or refused: run again to resume)."""
    ledger = replica.ledger
    check_empty(ledger)
    started = time.perf_counter()
    own = http is None
    client = http or httpx.Client(timeout=timeout, verify=True)
    base = credentials.server_url.rstrip("/")
    headers = {"authorization": f"Bearer {credentials.credential}"}
    try:
        with ledger.reader() as tx:
            known = baseline(tx.conn)
        resumed = known is not None
        scope = known.scope if known is not None else ("region" if region_only else "all")
        at = known.cursor if known is not None else None
        after = known.next_after if known is not None else None
        expected = known.digest if known is not None else None
        restarted = False
        while True:
            params: dict[str, Any] = {"limit": page, "scope": scope}
            if at is not None:
                params["at"] = at
            if after is not None:
                params["after"] = after
            try:
                response = client.get(base + "/v1/sync/bootstrap", params=params, headers=headers)
            except httpx.HTTPError as exc:
                raise SyncFailed(
                    f"cannot reach {base}: {type(exc).__name__}: {exc}", reachable=False
                ) from None
            if (
                response.status_code == 409
                and _code(response) == "snapshot_unavailable"
                and at is not None
                and not restarted
            ):
                log.warning("the server cannot serve snapshot %s any more: starting again", at)
                _discard(ledger)
                at = after = expected = None
                restarted = True
                continue
            if response.status_code != 200:
                raise _refusal(response)
            with bulk():
                got = _answer(BootstrapPage, response)
            if at is None:
                header = [got.cursor, got.heads or [], got.usage or [], got.coupons or []]
                with ledger.transaction() as tx:
                    begin_baseline(tx.conn, header, got.digest, scope, got.total)
                    state = _load(tx.conn, got)
                at, expected = got.cursor, got.digest
            else:
                if got.cursor != at or got.digest != expected:
                    raise SyncFailed(
                        f"the server answered with another snapshot ({got.cursor}) than the "
                        f"one being loaded ({at})",
                        reachable=True,
                        code="snapshot_changed",
                    )
                with ledger.transaction() as tx:
                    state = _load(tx.conn, got)
            if progress is not None:
                progress(state.customers, got.total)
            if got.next_after is None:
                break
            after = got.next_after
        try:
            with ledger.transaction() as tx:
                done = finish_baseline(tx.conn, replica.terminal_id)
        except ValueError as exc:
            _discard(ledger)
            raise SyncFailed(
                f"{exc}; the loaded part was discarded, run the bootstrap again",
                reachable=True,
                code="snapshot_digest_mismatch",
            ) from None
        return BootstrapResult(
            done.cursor, done.customers, done.pages, resumed, time.perf_counter() - started
        )
    finally:
        if own:
            client.close()


def _load(conn: Any, page: BootstrapPage) -> Baseline:
    try:
        with bulk():
            return load_page(conn, page.customers, page.next_after)
    except (ValueError, sqlite3.IntegrityError) as exc:  # rolled back with the transaction
        raise SyncFailed(
            f"the server sent a snapshot page that does not fit the pages before it ({exc})",
            reachable=True,
            code="snapshot_inconsistent",
        ) from None


def _discard(ledger: Ledger) -> None:
    with ledger.transaction() as tx:
        discard_baseline(tx.conn)


def scope_of(ledger: Ledger, region_only: bool) -> str:
    """The pull scope of this till: ``region`` when configured or when it was bootstrapped
    from a region snapshot (pulling everything then would apply events of customers whose
    earlier state it does not hold)."""
    if region_only:
        return "region"
    with ledger.reader() as tx:
        known = baseline(tx.conn)
    return "region" if known is not None and known.scope == "region" else "all"
