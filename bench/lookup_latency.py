"""Card look-up latency (``Service.lookup``) on a big ledger, against a bare primary-key SELECT.

The ledger is generated, not replayed through the service (that would take hours): the file
is created by opening ``pos_loyalty.ledger.store.Ledger`` (so Alembic makes the real schema),
then filled with plain ``sqlite3`` ``executemany`` in large transactions, with
``synchronous=OFF`` and ``journal_mode=OFF`` during the build only (the file is put back in
WAL mode at the end) and the two secondary indexes dropped and re-created afterwards from
their own stored SQL.

The rows are the real thing, made by the real code: every customer has a
``customer.enrolled`` event (with the demo shop's 50-point welcome lot) and a ``card.issued``
event; the remaining events are ``sale.committed`` events of 1-3 lines from a small café
menu, for random already-enrolled customers, quoted by ``pos_loyalty.domain.engine.quote``
against the customer's folded state (so coffee-card rewards happen when due), encoded by
``pos_loyalty.ledger.codec.payload_of`` and chained by ``codec.chain_hash``, stored by
``codec.encode_payload`` (with the built-in dictionary: none is trained here); lots and
receipts in their stored forms (``projections.lot_row``, ``codec.id_key``), events too
(ids as 16 bytes, ``codec.at_key`` times, ``prev_hash`` NULL after the first: 0006_events).
The projections (customers, cards, balances, lots, receipts, heads) are written from the
folded states, so ``--verify`` (``pos_loyalty.ledger.verify``; small sizes only, it holds
every event in memory) passes. Shortcuts: a sale's ``request_hash`` is a hash of its
receipt id and its cached ``receipts.response`` is ``{}``; events span the last 330 days, so
nothing has expired at build time.

The built file is cached under ``--db`` (default ``bench/.data/lookup-<N>-<M>.sqlite``) with a
``.meta.json`` beside it; a re-run with the same sizes (and stored format) skips the build.

    python bench/lookup_latency.py [--customers 1000000] [--events 10000000] [--lookups 5000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sqlite3
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import MENU, durable_connection, file_size, median_ms, p99_ms, ratio, verdict

from pos_loyalty.config import load_settings
from pos_loyalty.domain import engine
from pos_loyalty.domain.basket import Basket, BasketLine
from pos_loyalty.domain.cardcode import make_card_code
from pos_loyalty.domain.events import Event, Kind, Posting, Unit
from pos_loyalty.domain.ids import uuid7
from pos_loyalty.domain.programs import PointsProgram, ProgramSet
from pos_loyalty.domain.state import CustomerState
from pos_loyalty.ledger.codec import (
    GENESIS,
    at_key,
    chain_hash,
    encode_payload,
    id_key,
    kind_key,
    pack_response,
    payload_of,
)
from pos_loyalty.ledger.projections import lot_row
from pos_loyalty.ledger.store import Ledger
from pos_loyalty.service import Service

HERE = Path(__file__).resolve().parent
TERMINAL = "till-1"
SPAN = timedelta(days=330)
BATCH = 50_000  # rows per executemany
TARGET_MEDIAN_MS = 0.3
TARGET_P99_MS = 2.0
SECONDARY_INDEXES = ("ix_events_customer", "ix_cards_customer")

FORMAT = "0006_events"  # stored forms of the rows written here (a file of another is rebuilt)
EMPTY_ANSWER = pack_response({})  # the shortcut: no cached answer worth the name
EVENT_SQL = (
    "INSERT INTO events (id, terminal_id, seq, kind, at, customer_id, key, payload, prev_hash,"
    " hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def default_db(customers: int, events: int) -> Path:
    return HERE / ".data" / f"lookup-{customers}-{events}.sqlite"


def meta_path(db: Path) -> Path:
    return db.with_name(db.name + ".meta.json")


class Builder:
    """Generates the events in time order, folding each customer's state as it goes."""

    def __init__(self, conn: sqlite3.Connection, programs: ProgramSet, seed: int) -> None:
        self.conn = conn
        self.programs = programs
        self.rng = random.Random(seed)
        self.seq = 0
        self.prev = GENESIS
        self.states: list[CustomerState] = []
        self.codes: list[str] = []
        self.event_rows: list[tuple[Any, ...]] = []
        self.customer_rows: list[tuple[Any, ...]] = []
        self.card_rows: list[tuple[Any, ...]] = []
        self.receipt_rows: list[tuple[Any, ...]] = []
        self.serials: set[int] = set()
        self._index: dict[str, int] = {}
        welcome = programs.welcomes[0]
        target = programs.get(welcome.points_program)
        assert isinstance(target, PointsProgram)
        self.welcome_program = target
        self.welcome_points = welcome.points
        self.baskets = [
            Basket(lines=tuple(self._line(i, q) for i, q in combo)) for combo in self._combos()
        ]

    @staticmethod
    def _line(index: int, qty: int) -> BasketLine:
        sku, category, price = MENU[index]
        return BasketLine(sku=sku, qty=qty, unit_price=price, category=category)

    def _combos(self) -> list[list[tuple[int, int]]]:
        rng = random.Random(1)
        combos = []
        for _ in range(200):
            size = rng.choice((1, 1, 2, 2, 2, 3))
            items = rng.sample(range(len(MENU)), size)
            combos.append([(i, rng.choice((1, 1, 1, 2))) for i in items])
        return combos

    def _append(self, ev: Event) -> None:
        self.seq += 1
        ev = replace(ev, seq=self.seq)
        digest = chain_hash(self.prev, ev)
        self.event_rows.append(
            (
                id_key(ev.id),  # 0006_events: ids as 16 bytes, UTC times as microseconds
                TERMINAL,
                self.seq,
                kind_key(ev.kind.value),
                at_key(ev.at.isoformat()),
                None if ev.customer_id is None else id_key(ev.customer_id),
                ev.key,
                encode_payload(payload_of(ev)),  # the built-in dictionary: nothing trained
                None if self.seq > 1 else self.prev,  # implied by the row before (0006)
                digest,
            )
        )
        self.prev = digest
        if ev.customer_id is not None and ev.postings:
            self.states[self._index[ev.customer_id]].apply(ev)
        if len(self.event_rows) >= BATCH:
            self.flush()

    def enrol(self, at: datetime) -> None:
        customer_id = uuid7(int(at.timestamp() * 1000))
        self._index[customer_id] = len(self.states)
        self.states.append(CustomerState(customer_id))
        while True:
            serial = self.rng.randrange(10**11)
            if serial not in self.serials:
                self.serials.add(serial)
                break
        code = make_card_code("PL", serial)
        self.codes.append(code)
        n = len(self.states)
        profile: dict[str, Any] = {
            "consents": {},
            "email": None,
            "name": f"Customer {n}",
            "phone": None,
        }
        expires = at + timedelta(days=self.welcome_program.expiry_days)
        ms = int(at.timestamp() * 1000)
        self._append(
            Event(
                uuid7(ms),
                Kind.CUSTOMER_ENROLLED,
                TERMINAL,
                at,
                customer_id,
                postings=(
                    Posting(
                        self.welcome_program.id,
                        Unit.POINTS,
                        self.welcome_points,
                        expires_at=expires,
                    ),
                ),
                data={"profile": profile},
            )
        )
        self._append(
            Event(uuid7(ms), Kind.CARD_ISSUED, TERMINAL, at, customer_id, data={"code": code})
        )
        self.customer_rows.append(
            (customer_id, at.isoformat(), json.dumps(profile, sort_keys=True))
        )
        self.card_rows.append((code, customer_id, "active", at.isoformat(), None))

    def sale(self, at: datetime) -> None:
        state = self.states[self.rng.randrange(len(self.states))]
        basket = self.rng.choice(self.baskets)
        result = engine.quote(basket, state, self.programs, at)
        receipt_id = f"R{self.seq + 1:010d}"
        request_hash = hashlib.sha256(receipt_id.encode()).hexdigest()
        event_id = uuid7(int(at.timestamp() * 1000))
        self._append(
            Event(
                event_id,
                Kind.SALE_COMMITTED,
                TERMINAL,
                at,
                state.customer_id,
                key=receipt_id,
                postings=tuple(result.postings),
                data={
                    "receipt_id": receipt_id,
                    "request_hash": request_hash,
                    "lines": [line.to_json() for line in result.lines],
                    "earned": dict(result.earned),
                    "redeemed": dict(result.redeemed),
                },
            )
        )
        self.receipt_rows.append((f"sale:{receipt_id}", id_key(event_id), "{}", EMPTY_ANSWER))

    def run(self, customers: int, events: int, start: datetime, progress: bool) -> None:
        step = SPAN / events
        slot = 0
        to_enrol = customers
        began = time.perf_counter()
        next_report = 1_000_000
        while slot < events:
            at = start + step * slot
            left = events - slot
            # Enrolments (2 events each) spread evenly over the slots; at least one first.
            if to_enrol and (not self.states or self.rng.random() * left < 2 * to_enrol):
                self.enrol(at)
                to_enrol -= 1
                slot += 2
            else:
                self.sale(at)
                slot += 1
            if progress and slot >= next_report:
                rate = slot / (time.perf_counter() - began)
                print(
                    f"  built {slot:,} events ({rate:,.0f}/s, "
                    f"~{(events - slot) / rate / 60:.1f} min left)",
                    flush=True,
                )
                next_report += 1_000_000
        self.flush()

    def flush(self) -> None:
        c = self.conn
        c.executemany(EVENT_SQL, self.event_rows)
        c.executemany(
            "INSERT INTO customers (customer_id, enrolled_at, profile) VALUES (?, ?, ?)",
            self.customer_rows,
        )
        c.executemany(
            "INSERT INTO cards (code, customer_id, status, issued_at, reason)"
            " VALUES (?, ?, ?, ?, ?)",
            self.card_rows,
        )
        c.executemany(
            "INSERT INTO receipts (key, event_id, refunded, response) VALUES (?, ?, ?, ?)",
            self.receipt_rows,
        )
        for rows in (self.event_rows, self.customer_rows, self.card_rows, self.receipt_rows):
            rows.clear()

    def write_projections(self) -> None:
        """Balances and lots from the folded states (as ``projections.store_state`` would)."""
        balance_rows: list[tuple[Any, ...]] = []
        lot_rows: list[tuple[Any, ...]] = []
        for state in self.states:
            for (program, unit), value in state.balances().items():
                balance_rows.append((state.customer_id, program, unit.value, value))
            # Every lot-kept account: ``all_accounts()`` where the state has other lot units
            # than points (as ``projections.store_state`` walks them), else the points.
            accounts_of = getattr(state, "all_accounts", None)
            accounts = accounts_of() if accounts_of is not None else state.points
            for program, account in accounts.items():
                for lot in account.lots.values():
                    lot_rows.append(
                        lot_row(
                            lot.lot_id,
                            state.customer_id,
                            program,
                            lot.earned_at,
                            lot.expires_at,
                            lot.remaining,
                        )
                    )
            if len(lot_rows) >= BATCH:
                self._write_state_rows(balance_rows, lot_rows)
        self._write_state_rows(balance_rows, lot_rows)
        self.conn.execute(
            "INSERT INTO heads (terminal_id, seq, hash) VALUES (?, ?, ?)",
            (TERMINAL, self.seq, self.prev),
        )

    def _write_state_rows(
        self, balances: list[tuple[Any, ...]], lots: list[tuple[Any, ...]]
    ) -> None:
        self.conn.executemany(
            "INSERT INTO balances (customer_id, program, unit, balance) VALUES (?, ?, ?, ?)",
            balances,
        )
        self.conn.executemany(
            "INSERT INTO lots (customer_id, program, lot, earned_at, expires_at, remaining)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            lots,
        )
        balances.clear()
        lots.clear()


def build(db: Path, customers: int, events: int, seed: int, progress: bool) -> float:
    """Build the ledger file at ``db``; returns the seconds it took."""
    began = time.perf_counter()
    partial = db.with_name(db.name + ".building")
    for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
        leftover.unlink(missing_ok=True)
    Ledger(partial, TERMINAL).close()  # the real schema, by the real Alembic migration
    conn = sqlite3.connect(partial, isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")  # build only; WAL is restored below
    conn.execute("PRAGMA synchronous = OFF")  # build only
    conn.execute("PRAGMA cache_size = -1000000")  # 1 GB page cache for the build
    index_sql = {
        name: sql
        for name, sql in conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        )
    }
    for name in SECONDARY_INDEXES:
        conn.execute(f"DROP INDEX {name}")
    programs = load_settings(None).programs
    builder = Builder(conn, programs, seed)
    start = datetime.now(UTC).replace(microsecond=0) - SPAN - timedelta(days=1)
    conn.execute("BEGIN")
    builder.run(customers, events, start, progress)
    builder.write_projections()
    conn.execute("COMMIT")
    if progress:
        print("  events written; re-creating the secondary indexes", flush=True)
    for name in SECONDARY_INDEXES:
        conn.execute(index_sql[name])
    conn.execute("ANALYZE")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    partial.rename(db)
    seconds = time.perf_counter() - began
    meta_path(db).write_text(
        json.dumps(
            {
                "customers": customers,
                "events": events,
                "seed": seed,
                "format": FORMAT,
                "chain": "computed with pos_loyalty.ledger.codec.chain_hash",
                "build_seconds": round(seconds, 1),
                "built_at": datetime.now(UTC).isoformat(),
            },
            indent=2,
        )
    )
    return seconds


def cached(db: Path, customers: int, events: int) -> bool:
    meta = meta_path(db)
    if not db.exists() or not meta.exists():
        return False
    info = json.loads(meta.read_text())
    return bool(
        info.get("customers") == customers
        and info.get("events") == events
        and info.get("format") == FORMAT
    )


def sample_codes(db: Path, k: int, seed: int) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (max_rowid,) = conn.execute("SELECT max(rowid) FROM cards").fetchone()
        rng = random.Random(seed)
        codes: list[str] = []
        while len(codes) < k:
            row = conn.execute(
                "SELECT code FROM cards WHERE rowid = ?", (rng.randint(1, max_rowid),)
            ).fetchone()
            if row is not None:
                codes.append(str(row[0]))
    finally:
        conn.close()
    return codes


def bare_lookups(
    conn: sqlite3.Connection, codes: list[str], warm: list[str], *, full: bool
) -> list[float]:
    """Seconds per look-up with plain sqlite3: the card by primary key, or (``full``) the
    same rows ``Service.lookup`` reads: card, customer, balances and lots, in one read
    transaction."""

    def one(code: str) -> None:
        card = conn.execute("SELECT * FROM cards WHERE code = ?", (code,)).fetchone()
        if full:
            conn.execute("BEGIN")
            customer_id = card[1]
            conn.execute("SELECT * FROM customers WHERE customer_id = ?", (customer_id,)).fetchone()
            conn.execute("SELECT * FROM balances WHERE customer_id = ?", (customer_id,)).fetchall()
            lots_key = id_key(customer_id)  # lots hold ids as 16 bytes (codec, 0005_compact)
            conn.execute("SELECT * FROM lots WHERE customer_id = ?", (lots_key,)).fetchall()
            conn.execute("COMMIT")

    for code in warm:
        one(code)
    out = []
    for code in codes:
        start = time.perf_counter()
        one(code)
        out.append(time.perf_counter() - start)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="default 1,000,000")
    parser.add_argument("--events", type=int, default=10_000_000, help="default 10,000,000")
    parser.add_argument("--lookups", type=int, default=5000, help="timed look-ups (default 5000)")
    parser.add_argument("--db", type=Path, default=None, help="ledger file (cached between runs)")
    parser.add_argument("--rebuild", action="store_true", help="build even if the file exists")
    parser.add_argument("--verify", action="store_true", help="run `ledger verify` (small only)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.customers < 1 or args.events < 2 * args.customers:
        parser.error("need --customers >= 1 and --events >= 2 * --customers")
    if args.lookups < 1:
        parser.error("--lookups must be at least 1")
    db: Path = args.db or default_db(args.customers, args.events)
    db.parent.mkdir(parents=True, exist_ok=True)

    if args.rebuild or not cached(db, args.customers, args.events):
        print(f"building {db} ({args.customers:,} customers, {args.events:,} events)", flush=True)
        seconds = build(db, args.customers, args.events, args.seed, progress=args.events >= 10**6)
        print(f"build: {seconds:.1f} s  (hash chain computed with codec.chain_hash)")
    else:
        info = json.loads(meta_path(db).read_text())
        print(f"build: cached {db} (built in {info.get('build_seconds')} s)")
    print(
        f"ledger: {args.customers:,} customers  {args.events:,} events  "
        f"file: {file_size(db) / 1e6:,.1f} MB"
    )

    settings = load_settings(None, data_dir=db.parent)
    ledger = Ledger(db, TERMINAL)
    try:
        if args.verify:
            from pos_loyalty.ledger.verify import verify

            report = verify(ledger)
            problems = "; ".join(str(p) for p in report.problems[:1])
            print(f"verify: {'ok' if report.ok else 'FAILED ' + problems} ({report.events} events)")
        service = Service(settings, ledger)
        codes = sample_codes(db, args.lookups, args.seed + 1)
        warm = codes[: min(200, len(codes))]
        for code in warm:
            service.lookup(code)
        looks = []
        for code in codes:
            start = time.perf_counter()
            service.lookup(code)
            looks.append(time.perf_counter() - start)
    finally:
        ledger.close()

    conn = durable_connection(db)
    try:
        bare = bare_lookups(conn, codes, warm, full=False)
        bare_full = bare_lookups(conn, codes, warm, full=True)
    finally:
        conn.close()

    med, p99 = median_ms(looks), p99_ms(looks)
    base = median_ms(bare)
    print(f"lookups timed: {len(codes)} random existing cards")
    print(
        f"lookup median: {med:.3f} ms  (target <= {TARGET_MEDIAN_MS}) "
        f"{verdict(med <= TARGET_MEDIAN_MS)}"
    )
    print(f"lookup p99: {p99:.3f} ms  (target <= {TARGET_P99_MS}) {verdict(p99 <= TARGET_P99_MS)}")
    print(
        f"lookup median: {med:.3f} ms  baseline median: {base:.3f} ms  "
        f"ratio: {ratio(med, base):.1f}"
        "  (baseline: bare sqlite3 SELECT of the card by primary key)"
    )
    full = median_ms(bare_full)
    print(
        f"lookup median: {med:.3f} ms  bare same-rows median: {full:.3f} ms  "
        f"ratio: {ratio(med, full):.1f}  (card, customer, balances, lots with plain sqlite3)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
