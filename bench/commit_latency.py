"""Commit latency: quote + commit of a 5-line basket through ``Service`` vs a bare SQLite commit.

The service path is what a POS's "pay" button costs: ``Service.quote`` then
``Service.commit`` for an enrolled customer on the demo shop (coffee card, points with
expiry, welcome gift), hash chain included, durable (WAL, synchronous=FULL).

The baseline, measured in the same run and interleaved with it, writes the same rows with
plain ``sqlite3`` in one ``BEGIN IMMEDIATE`` transaction on a second ledger file created by
the same Alembic migration and opened with the same PRAGMAs: the sale event row (the payload
the service actually wrote), its receipts row (with the cached response), the two balance
updates (points, stamps), the new lot and the chain head. The ratio is therefore the cost of
everything the service does beyond the bytes it must make durable.

    python bench/commit_latency.py [--n 300]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    basket_line,
    demo_service,
    durable_connection,
    line_json,
    median_ms,
    p99_ms,
    ratio,
    verdict,
)

from pos_loyalty.domain.basket import Basket
from pos_loyalty.domain.ids import uuid7
from pos_loyalty.ledger.codec import id_key
from pos_loyalty.ledger.projections import lot_row
from pos_loyalty.ledger.store import Ledger
from pos_loyalty.service import Profile, SaleRequest, Service

TARGET_RATIO = 1.5
WARMUP = 5


def five_line_basket() -> Basket:
    # Two coffees (stamps, and a free one every tenth), bakery, drinks, food: 5 lines.
    return Basket(lines=tuple(basket_line(i) for i in (1, 2, 3, 5, 7)))


class ServiceSale:
    """Quote + commit on the real service, one new receipt id per call."""

    def __init__(self, service: Service, card: str) -> None:
        self.service = service
        self.card = card
        self.basket = five_line_basket()
        self.lines_json = [line_json(line) for line in self.basket.lines]
        self.count = 0

    def run(self) -> tuple[float, float]:
        """Seconds for the quote and for the commit."""
        self.count += 1
        receipt_id = f"bench-{self.count:08d}"
        raw: dict[str, Any] = {
            "receipt_id": receipt_id,
            "card": self.card,
            "basket": {"lines": self.lines_json},
        }
        quote = SaleRequest(basket=self.basket, card=self.card, raw=raw)
        commit = SaleRequest(basket=self.basket, card=self.card, receipt_id=receipt_id, raw=raw)
        start = time.perf_counter()
        self.service.quote(quote)
        middle = time.perf_counter()
        self.service.commit(commit)
        end = time.perf_counter()
        return middle - start, end - middle


class BareSale:
    """The same rows written with plain sqlite3, in one durable transaction."""

    def __init__(self, path: Path, payload: bytes, response: bytes, customer_id: str) -> None:
        Ledger(path, "till-1").close()  # the real schema, by the real migration
        self.conn = durable_connection(path)
        self.payload = payload
        self.response = response
        self.customer_id = customer_id
        self.seq = 0
        self.prev = bytes(32)
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany(
            "INSERT INTO balances (customer_id, program, unit, balance) VALUES (?, ?, ?, ?)",
            [(customer_id, "points", "points", 50), (customer_id, "coffee-card", "stamps", 0)],
        )
        self.conn.execute(
            "INSERT INTO heads (terminal_id, seq, hash) VALUES ('till-1', 0, ?)", (self.prev,)
        )
        self.conn.execute("COMMIT")

    def run(self) -> float:
        self.seq += 1
        event_id = uuid7()
        digest = hashlib.sha256(self.prev + self.payload).digest()
        start = time.perf_counter()
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        c.execute(
            "INSERT INTO events (id, terminal_id, seq, kind, at, customer_id, key, payload,"
            " prev_hash, hash) VALUES (?, 'till-1', ?, 'sale.committed', ?, ?, ?, ?, ?, ?)",
            (
                event_id,
                self.seq,
                "2026-01-01T12:00:00+00:00",
                self.customer_id,
                f"bare-{self.seq}",
                self.payload,
                self.prev,
                digest,
            ),
        )
        c.execute(
            "INSERT INTO receipts (key, event_id, refunded, response) VALUES (?, ?, '{}', ?)",
            (f"sale:bare-{self.seq}", id_key(event_id), self.response),
        )
        c.execute(
            "UPDATE balances SET balance = balance + 12"
            " WHERE customer_id = ? AND program = 'points' AND unit = 'points'",
            (self.customer_id,),
        )
        c.execute(
            "UPDATE balances SET balance = (balance + 2) % 9"
            " WHERE customer_id = ? AND program = 'coffee-card' AND unit = 'stamps'",
            (self.customer_id,),
        )
        c.execute(
            "INSERT INTO lots (customer_id, program, lot, earned_at, expires_at, remaining)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            lot_row(
                f"{event_id}/points",
                self.customer_id,
                "points",
                "2026-01-01T12:00:00+00:00",
                "2027-01-01T12:00:00+00:00",
                12,
            ),
        )
        c.execute(
            "UPDATE heads SET seq = ?, hash = ? WHERE terminal_id = 'till-1'", (self.seq, digest)
        )
        c.execute("COMMIT")
        end = time.perf_counter()
        self.prev = digest
        return end - start

    def close(self) -> None:
        self.conn.close()


def last_sale_rows(ledger_file: Path) -> tuple[bytes, bytes]:
    """The stored payload and cached response of the newest sale in a ledger file."""
    conn = sqlite3.connect(ledger_file)
    try:
        payload, response = conn.execute(
            "SELECT e.payload, r.response FROM events e JOIN receipts r"
            " ON r.key = 'sale:' || e.key"
            # kinds are stored as small integers since 0006_events (codec.kind_key)
            " WHERE e.kind IN ('sale.committed', 4) ORDER BY e.pos DESC LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    return bytes(payload), bytes(response)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="timed sales per path (default 300)")
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary files go")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")

    tmp = Path(tempfile.mkdtemp(prefix="bench-commit-", dir=args.dir))
    try:
        service = demo_service(tmp / "service")
        try:
            card = service.enrol(Profile(name="Bench"))
            sale = ServiceSale(service, card["card"]["code"])
            customer_id = card["customer_id"]
            for _ in range(WARMUP):
                sale.run()
            payload, response = last_sale_rows(service.ledger.path)
            bare = BareSale(tmp / "bare.sqlite", payload, response, customer_id)
            for _ in range(WARMUP):
                bare.run()
            quotes: list[float] = []
            commits: list[float] = []
            totals: list[float] = []
            baseline: list[float] = []
            for i in range(args.n):
                # Alternate which path goes first, so neither always follows the other's fsync.
                if i % 2:
                    baseline.append(bare.run())
                q, c = sale.run()
                if not i % 2:
                    baseline.append(bare.run())
                quotes.append(q)
                commits.append(c)
                totals.append(q + c)
            bare.close()
        finally:
            service.ledger.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    total_med = median_ms(totals)
    base_med = median_ms(baseline)
    r = ratio(total_med, base_med)
    tenth = max(1, args.n // 10)
    print(f"sales timed: {args.n} per path  (5-line basket, enrolled customer, durable)")
    print(
        f"quote median: {median_ms(quotes):.3f} ms  commit-only median: {median_ms(commits):.3f} ms"
    )
    print(
        f"commit median: {total_med:.3f} ms  baseline median: {base_med:.3f} ms  "
        f"ratio: {r:.2f} (target <= {TARGET_RATIO}) {verdict(r <= TARGET_RATIO)}"
    )
    print(f"commit p99: {p99_ms(totals):.3f} ms  baseline p99: {p99_ms(baseline):.3f} ms")
    print(
        f"commit median, first {tenth}: {statistics.median(totals[:tenth]) * 1000:.3f} ms  "
        f"last {tenth}: {statistics.median(totals[-tenth:]) * 1000:.3f} ms  "
        f"(the customer gains one points lot per sale)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
