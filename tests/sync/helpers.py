"""Helpers for sync tests: pair a till, run a round, compare balances."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from pos_loyalty.domain.basket import Basket, BasketLine, Redemption
from pos_loyalty.domain.events import Event, Kind, Posting, Unit
from pos_loyalty.domain.ids import uuid7
from pos_loyalty.ledger import schema
from pos_loyalty.ledger.replication import Credentials
from pos_loyalty.service import SaleRequest, Service
from sync.client import RoundResult, SyncClient, pair
from sync.server.store import ServerStore

from .conftest import Till


def append_adjustments(till: Till, points: Iterable[tuple[str, int]], reason: str) -> None:
    """Real events of this till, one points adjustment per (customer, delta), appended
    through its ledger in one transaction: sequence, hash chain and projections as for any
    event."""
    at = datetime.now(UTC)
    with till.service.ledger.transaction() as tx:
        tx.append(
            [
                Event(
                    uuid7(),
                    Kind.ACCOUNT_ADJUSTED,
                    till.terminal_id,
                    at,
                    customer,
                    postings=(Posting("points", Unit.POINTS, delta),),
                    data={"reason": reason},
                )
                for customer, delta in points
            ]
        )


def pair_till(
    store: ServerStore,
    till: Till,
    url: str,
    merchant: str = "m1",
    store_id: str = "s1",
    http: httpx.Client | None = None,
) -> Credentials:
    token = store.create_pairing_token(till.terminal_id, merchant, store_id)
    creds = pair(url, token, terminal_id=till.terminal_id, http=http)
    till.replica.save_credentials(creds)
    return creds


def sync_round(till: Till, url: str | None = None, http: httpx.Client | None = None) -> RoundResult:
    creds = till.replica.credentials()
    assert creds is not None
    if url is not None:
        creds = Credentials(
            url, creds.terminal_id, creds.merchant_id, creds.store_id, creds.credential
        )
    client = SyncClient(till.replica, creds, http=http, timeout=5.0)
    try:
        return client.round()
    finally:
        client.close()


def sale(
    service: Service, card: str, receipt: str, price: int = 1000, redeem: int = 0
) -> dict[str, Any]:
    basket = Basket(
        (BasketLine("item", 1, price, "bakery"),),
        (),
        (Redemption("points", redeem),) if redeem else (),
    )
    raw = {"card": card, "receipt": receipt, "price": price, "redeem": redeem}
    return service.commit(SaleRequest(basket, card, receipt, None, raw))


def till_balances(till: Till) -> dict[tuple[str, str, str], int]:
    with till.service.ledger.reader() as tx:
        return {
            (r.customer_id, r.program, r.unit): int(r.balance)
            for r in tx.conn.execute(select(schema.balances))
            if r.balance != 0
        }


def nonzero(balances: dict[tuple[str, str, str], int]) -> dict[tuple[str, str, str], int]:
    return {k: v for k, v in balances.items() if v != 0}


def event_ids(till: Till) -> set[str]:
    with till.service.ledger.reader() as tx:
        return {r.id for r in tx.conn.execute(select(schema.events.c.id))}


def serve(
    db_url: str, data_dir: Path, port: int, extra: Iterable[str] = (), timeout: float = 60.0
) -> subprocess.Popen[bytes]:
    """``pos-loyalty server --db URL --port N [extra]`` in a child process (output appended
    to ``data_dir/server.log``), once it answers its health check."""
    log_path = data_dir / "server.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pos_loyalty.cli", "--data-dir", str(data_dir), "server"]
            + ["--db", db_url, "--port", str(port), *extra],
            stdout=log,
            stderr=log,
        )
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {log_path.read_text()[-2000:]}")
        try:
            url = f"http://127.0.0.1:{port}/v1/sync/health"
            if httpx.get(url, timeout=1.0).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the server did not start")
        time.sleep(0.05)


def at_once(work: Callable[[Any], None], items: Iterable[Any]) -> None:
    """``work(item)`` for every item, each in its own thread, all started before any is
    joined; the first exception one raised is raised here."""
    errors: list[BaseException] = []

    def run(item: Any) -> None:
        try:
            work(item)
        except BaseException as exc:  # noqa: BLE001 - raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
