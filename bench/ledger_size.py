"""Ledger size on disk per event, against a bare table of the events' canonical JSON.

Commits K sales (a mix of 1-5 line baskets from the demo café menu, 90 % with a customer
card, 10 % anonymous) through ``Service.commit`` on the demo shop, checkpoints the WAL, and
divides the size of the ledger file (plus what is left of the WAL) by the number of events.
The baseline is a fresh SQLite file with one table holding only each event's canonical JSON
(``codec.canonical`` of its body with ``seq``: what the hash chain covers), i.e. the
information content of the log without any projection, index or cached response.

Also prints where the bytes go (SQLite's ``dbstat``: tables and their indexes).

    python bench/ledger_size.py [--sales 5000] [--customers 200]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import MENU, basket_line, demo_service, file_size, line_json, ratio, verdict
from sqlalchemy import select

from pos_loyalty.domain.basket import Basket
from pos_loyalty.ledger import schema
from pos_loyalty.ledger.codec import canonical, event_from_row
from pos_loyalty.ledger.store import Ledger
from pos_loyalty.service import Profile, SaleRequest

TARGET_BYTES = 300


def disk_bytes(db: Path) -> int:
    return file_size(db) + file_size(Path(f"{db}-wal"))


def breakdown(db: Path) -> list[tuple[str, int]]:
    """Bytes per table or index, largest first (``dbstat``; empty if SQLite lacks it)."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
        ).fetchall()
    except sqlite3.OperationalError:
        rows = []
    finally:
        conn.close()
    return [(str(name), int(size)) for name, size in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sales", type=int, default=5000, help="sales to commit (default 5000)")
    parser.add_argument("--customers", type=int, default=200, help="customers enrolled first")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    if args.sales < 1 or args.customers < 1:
        parser.error("--sales and --customers must be at least 1")
    rng = random.Random(args.seed)

    tmp = Path(tempfile.mkdtemp(prefix="bench-size-"))
    try:
        service = demo_service(tmp / "ledger")
        db = service.ledger.path
        began = time.perf_counter()
        try:
            cards = [
                str(service.enrol(Profile(name=f"Customer {i}"))["card"]["code"])
                for i in range(args.customers)
            ]
            for n in range(args.sales):
                size = rng.randint(1, 5)
                lines = tuple(
                    basket_line(i, rng.choice((1, 1, 2)))
                    for i in rng.sample(range(len(MENU)), size)
                )
                card = rng.choice(cards) if rng.random() < 0.9 else None
                receipt_id = f"R{n:08d}"
                raw: dict[str, Any] = {
                    "receipt_id": receipt_id,
                    "card": card,
                    "basket": {"lines": [line_json(line) for line in lines]},
                }
                service.commit(
                    SaleRequest(basket=Basket(lines), card=card, receipt_id=receipt_id, raw=raw)
                )
        finally:
            service.ledger.close()
        seconds = time.perf_counter() - began

        # The events as the chain hashes them (stored payloads decoded with the ledger's
        # compression dictionaries).
        ledger = Ledger(db, service.settings.terminal_id)
        try:
            bodies = []
            with ledger.reader() as tx:
                for row in tx.conn.execute(select(schema.events).order_by(schema.events.c.pos)):
                    ev = event_from_row(row, tx.dicts)
                    body = ev.body()
                    body["seq"] = ev.seq
                    bodies.append(canonical(body).decode())
        finally:
            ledger.close()
        conn = sqlite3.connect(db)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        events = len(bodies)
        total = disk_bytes(db)
        parts = breakdown(db)

        bare = tmp / "bare.sqlite"
        bconn = sqlite3.connect(bare, isolation_level=None)
        try:
            bconn.execute("PRAGMA journal_mode = WAL")
            bconn.execute("CREATE TABLE events (body TEXT NOT NULL)")
            bconn.execute("BEGIN")
            bconn.executemany("INSERT INTO events (body) VALUES (?)", ((b,) for b in bodies))
            bconn.execute("COMMIT")
            bconn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            bconn.close()
        bare_total = disk_bytes(bare)
        json_bytes = sum(len(b.encode()) for b in bodies)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    per_event = total / events
    base_per_event = bare_total / events
    print(
        f"sales committed: {args.sales}  customers: {args.customers}  events: {events}  "
        f"({seconds:.1f} s)"
    )
    print(
        f"ledger bytes/event: {per_event:.0f}  baseline bytes/event: {base_per_event:.0f}  "
        f"ratio: {ratio(per_event, base_per_event):.2f}  (target <= {TARGET_BYTES} bytes) "
        f"{verdict(per_event <= TARGET_BYTES)}"
    )
    print(
        f"ledger file: {total / 1e6:.2f} MB  baseline file: {bare_total / 1e6:.2f} MB  "
        f"canonical JSON alone: {json_bytes / events:.0f} bytes/event"
    )
    for name, size in parts:
        print(f"  {name:<36} {size / events:8.0f} bytes/event  {size / total:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
