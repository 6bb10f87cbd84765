"""Projections: the tables derived from events, updated on append and rebuilt by verify.

``Projector`` applies events to projection rows through one interface used both by the
incremental path (in the append transaction) and by the rebuild (into a scratch copy).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from operator import is_
from typing import Any, cast

from sqlalchemy import Connection, select

from pos_loyalty.domain.events import LOT_UNITS, Event, Kind, Unit
from pos_loyalty.domain.state import CustomerState, Lot, PointsAccount

from . import schema
from .codec import (
    earned_key,
    earned_value,
    expires_key,
    expires_value,
    id_key,
    id_text,
    lot_key,
    lot_text,
)


def raw_connection(conn: Connection) -> sqlite3.Connection:
    """The DB-API (``sqlite3``) connection under ``conn``, in the same transaction.

    The hot reads and writes (look-up, quote, commit) run on it with plain SQL: SQLAlchemy's
    per-statement work costs several times what SQLite spends on these by-key statements.
    """
    return cast(sqlite3.Connection, conn.connection.driver_connection)


_BALANCES = "SELECT program, unit, balance FROM balances WHERE customer_id = ?"
# Lots in their stored forms (``codec``: id_key, lot_key; 0005_compact; times as earned_key,
# expires_key: 0006_events).
_LOTS = "SELECT program, lot, earned_at, expires_at, remaining FROM lots WHERE customer_id = ?"
_INSERT_BALANCE = "INSERT INTO balances (customer_id, program, unit, balance) VALUES (?, ?, ?, ?)"
_UPDATE_BALANCE = (
    "UPDATE balances SET balance = ? WHERE customer_id = ? AND program = ? AND unit = ?"
)
_DELETE_LOT = "DELETE FROM lots WHERE customer_id = ? AND program = ? AND lot = ?"
_INSERT_LOT_ROW = (
    "INSERT INTO lots (customer_id, program, lot, earned_at, expires_at, remaining) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_UPDATE_LOT = "UPDATE lots SET remaining = ? WHERE customer_id = ? AND program = ? AND lot = ?"
_OPEN_COUPONS = (
    "SELECT serial, program, code, expires_at FROM coupons WHERE customer_id = ? "
    "AND NOT EXISTS (SELECT 1 FROM usage WHERE usage.key = 'coupon:' || coupons.serial) "
    "ORDER BY issued_at, serial"
)

_INSERT_RECEIPT = "INSERT INTO receipts (key, event_id, refunded, response) VALUES (?, ?, ?, ?)"
_INSERT_REQUEST = _INSERT_RECEIPT.replace("INSERT INTO", "INSERT OR IGNORE INTO")
_INSERT_REDEMPTION = (
    "INSERT INTO redemptions (event_id, terminal_id, at, customer_id, points, wallet) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_ADD_USAGE = "UPDATE usage SET count = count + ? WHERE key = ?"
_INSERT_USAGE = "INSERT INTO usage (key, count) VALUES (?, ?)"
_INSERT_COUPON = (
    "INSERT INTO coupons (serial, program, customer_id, code, issued_at, expires_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_CUSTOMER = "INSERT INTO customers (customer_id, enrolled_at, profile) VALUES (?, ?, ?)"
_INSERT_CARD = "INSERT INTO cards (code, customer_id, status, issued_at) VALUES (?, ?, ?, ?)"
_BLOCK_CARD = "UPDATE cards SET status = ?, reason = ? WHERE code = ?"
_RECEIPT_REFUNDED = "SELECT refunded FROM receipts WHERE key = ?"
_SET_REFUNDED = "UPDATE receipts SET refunded = ? WHERE key = ?"
_RECEIPT_EVENT = "SELECT event_id FROM receipts WHERE key = ?"
_CARD_EXISTS = "SELECT 1 FROM cards WHERE code = ?"
_CUSTOMER_EXISTS = "SELECT 1 FROM customers WHERE customer_id = ?"
_INSERT_REFERRAL = "INSERT INTO referrals (code, customer_id) VALUES (?, ?)"


def state_of_balances(customer_id: str, balances: Iterable[Sequence[Any]]) -> CustomerState:
    """A customer's state from their ``(program, unit, balance)`` rows, lots not yet in."""
    state = CustomerState(customer_id)
    for program, unit_name, balance in balances:
        unit = Unit(unit_name)
        if unit is Unit.STAMPS:
            state.stamps[program] = balance
        elif unit is Unit.POINTS:
            state.points[program] = PointsAccount(balance=balance)
        elif unit in LOT_UNITS:
            state.lotted[(program, unit)] = PointsAccount(balance=balance)
        else:
            state.counters[(program, unit)] = balance
    return state


def load_state(conn: Connection, customer_id: str) -> CustomerState:
    """The folded state of one customer, read from the projection tables."""
    raw = raw_connection(conn)
    state = state_of_balances(customer_id, raw.execute(_BALANCES, (customer_id,)).fetchall())
    accounts = state.all_accounts()
    # Lots are the one projection that grows with a customer's history (one per earning
    # sale until it expires), read on every commit: fetched in one go.
    rows = raw.execute(_LOTS, (id_key(customer_id),)).fetchall()
    lots_of = {program: account.lots for program, account in accounts.items()}
    for program, lot, earned_at, expires_at, remaining in rows:
        lots = lots_of.get(program)
        if lots is None:
            lots = lots_of[program] = state.points.setdefault(program, PointsAccount()).lots
        lot_id = lot_text(lot, program)
        earned = earned_value(earned_at, lot)
        lots[lot_id] = Lot(lot_id, earned, expires_value(expires_at, earned), remaining)
    return state


def lot_row(
    lot_id: str,
    customer_id: str,
    program: str,
    earned_at: datetime | str,
    expires_at: datetime | str | None,
    remaining: int,
) -> tuple[Any, ...]:
    """A ``lots`` row in its stored form, for ``INSERT_LOT`` (times as datetimes or ISO)."""
    if isinstance(earned_at, str):
        earned_at = datetime.fromisoformat(earned_at)
    if isinstance(expires_at, str):
        expires_at = datetime.fromisoformat(expires_at)
    lot = lot_key(lot_id, program)
    return (
        id_key(customer_id),
        program,
        lot,
        earned_key(earned_at, lot),
        expires_key(expires_at, earned_at),
        remaining,
    )


def insert_lots(raw: sqlite3.Connection, rows: Iterable[Sequence[Any]]) -> None:
    """Insert lots given as ``(lot_id, customer_id, program, earned_at, expires_at,
    remaining)`` with ISO (or datetime) times: the stored forms are made here."""
    raw.executemany(_INSERT_LOT_ROW, (lot_row(*row) for row in rows))


def store_state(conn: Connection, before: CustomerState, after: CustomerState) -> None:
    """Write the difference between two states of one customer."""
    cid = after.customer_id
    raw = raw_connection(conn)
    old = before.balances()
    for (program, unit), value in after.balances().items():
        if (program, unit) not in old:
            raw.execute(_INSERT_BALANCE, (cid, program, unit.value, value))
        elif old[(program, unit)] != value:
            raw.execute(_UPDATE_BALANCE, (value, cid, program, unit.value))
    # Lots are keyed by (customer, program, lot) in their stored forms (``codec``).
    ckey = id_key(cid)
    old_accounts = before.all_accounts()
    new_accounts = after.all_accounts()
    for program, acc in old_accounts.items():
        kept = new_accounts.get(program)
        for lot_id in acc.lots.keys() - (kept.lots.keys() if kept is not None else set()):
            raw.execute(_DELETE_LOT, (ckey, program, lot_key(lot_id, program)))
    for program, acc in new_accounts.items():
        old_acc = old_accounts.get(program)
        old_lots = old_acc.lots if old_acc is not None else {}
        lots = acc.lots
        # Lots are immutable and states are shallow copies: a lot both states hold unchanged
        # is the same object. A regular customer holds hundreds, and a sale usually only
        # adds one: checked in C (identity), walked one by one only when one changed.
        if all(map(is_, map(lots.get, old_lots), old_lots.values())):
            changed: Iterable[str] = lots.keys() - old_lots.keys()
        else:
            changed = lots.keys()
        for lot_id in changed:
            lot = lots[lot_id]
            known = old_lots.get(lot_id)
            if known is None:
                key = lot_key(lot_id, program)
                raw.execute(
                    _INSERT_LOT_ROW,
                    (
                        ckey,
                        program,
                        key,
                        earned_key(lot.earned_at, key),
                        expires_key(lot.expires_at, lot.earned_at),
                        lot.remaining,
                    ),
                )
            elif known.remaining != lot.remaining:
                raw.execute(_UPDATE_LOT, (lot.remaining, ckey, program, lot_key(lot_id, program)))


def apply_side_tables(conn: Connection, event: Event, response: bytes | None = None) -> None:
    """Customers, cards and receipts rows that follow from ``event``."""
    data = event.data
    _apply_catalog(conn, event)
    # Plain SQL through the same connection (like the state writes): this runs for every
    # event appended, pulled or rebuilt, where building SQLAlchemy statements per call cost
    # more than executing them.
    raw = raw_connection(conn)
    if event.kind is Kind.CUSTOMER_ENROLLED:
        raw.execute(
            _INSERT_CUSTOMER,
            (
                event.customer_id,
                event.at.isoformat(),
                json.dumps(data.get("profile", {}), sort_keys=True),
            ),
        )
    elif event.kind is Kind.CARD_ISSUED:
        raw.execute(_INSERT_CARD, (data["code"], event.customer_id, "active", event.at.isoformat()))
    elif event.kind is Kind.CARD_BLOCKED:
        raw.execute(_BLOCK_CARD, ("blocked", data.get("reason"), data["code"]))
    elif event.kind is Kind.SALE_COMMITTED:
        raw.execute(
            _INSERT_RECEIPT,
            (
                f"sale:{data['receipt_id']}",
                id_key(event.id),
                "{}",
                response or b"",
            ),
        )
        _record_redemption(raw, event)
    elif event.kind in REQUEST_KEYS:
        if data.get("request_id"):
            # First wins (a restored till may have reused an id of its lost epoch): the
            # same in a rebuild, and nothing else depends on the row.
            key = request_key(event.kind, event.terminal_id, data["request_id"])
            raw.execute(_INSERT_REQUEST, (key, id_key(event.id), "{}", response or b""))
        if event.kind is Kind.WALLET_PAID_OUT:
            _record_redemption(raw, event)
    elif event.kind is Kind.REFUND_COMMITTED:
        sale_key = f"sale:{data['receipt_id']}"
        (stored,) = raw.execute(_RECEIPT_REFUNDED, (sale_key,)).fetchall()
        refunded: dict[str, int] = json.loads(stored[0])
        for index, units in data["units"].items():
            refunded[index] = refunded.get(index, 0) + int(units)
        raw.execute(_SET_REFUNDED, (json.dumps(refunded, sort_keys=True), sale_key))
        raw.execute(
            _INSERT_RECEIPT,
            (f"refund:{data['refund_id']}", id_key(event.id), "{}", response or b""),
        )


def _record_redemption(raw: sqlite3.Connection, event: Event) -> None:
    """The ``redemptions`` row of a sale or payout: points redeemed, wallet money out."""
    points = wallet = 0
    for p in event.postings:
        if p.delta < 0:
            if p.unit is Unit.POINTS:
                points -= p.delta
            elif p.unit is Unit.MONEY:
                wallet -= p.delta
    if points or wallet:
        raw.execute(
            _INSERT_REDEMPTION,
            (
                id_key(event.id),
                event.terminal_id,
                event.at.isoformat(),
                event.customer_id,
                points,
                wallet,
            ),
        )


# Writes a POS may retry with a ``request_id`` (its idempotency key, like a sale's receipt
# id): the receipt key each kind's id is kept under.
REQUEST_KEYS = {
    Kind.WALLET_PAID_OUT: "payout",
    Kind.ACCOUNT_ADJUSTED: "adjustment",
    Kind.COUPON_ISSUED: "coupon-issue",
}


def request_key(kind: Kind, terminal_id: str, request_id: str) -> str:
    """A request id is the POS's, at one till: kept per till, so ids chosen by the POSes of
    two tills never collide (and no till or server fold has to settle which one wins)."""
    return f"{REQUEST_KEYS[kind]}:{terminal_id}:{request_id}"


def apply_shared(conn: Connection, event: Event) -> None:
    """The use counters an event adds (promo codes, coupons redeemed or withdrawn, gift
    vouchers) and the coupons it issued: taken from every event, also one whose other side
    tables are not taken here (``side_table_problem``: its receipt id taken by another
    till's sale, its sale not held on a bootstrapped till). What it used is used on every
    till, and a coupon it issued is valid on every till: otherwise a coupon withdrawn by a
    refund stays usable, and a reward coupon is unknown, where that receipt is not kept."""
    data = event.data
    raw = raw_connection(conn)
    for key, count in sorted(data.get("uses", {}).items()):
        if not count:
            continue
        updated = raw.execute(_ADD_USAGE, (int(count), key))
        if updated.rowcount == 0:
            raw.execute(_INSERT_USAGE, (key, int(count)))
    for coupon in data.get("coupons", ()):
        raw.execute(
            _INSERT_COUPON,
            (
                coupon["serial"],
                coupon["program"],
                event.customer_id,
                coupon["code"],
                event.at.isoformat(),
                coupon["expires_at"],
            ),
        )


def _apply_catalog(conn: Connection, event: Event) -> None:
    """Usage counters, issued coupons and referral codes that follow from ``event``."""
    apply_shared(conn, event)
    if event.kind is Kind.CUSTOMER_ENROLLED and event.data.get("referral_code"):
        raw_connection(conn).execute(
            _INSERT_REFERRAL, (event.data["referral_code"], event.customer_id)
        )


def side_table_problem(conn: Connection, event: Event) -> tuple[str, str] | None:
    """Why ``apply_side_tables`` cannot take this (remote) event here, or None.

    The incremental path (sync) and the rebuild apply the same rule, in the same order, so a
    till holding colliding receipts from other tills still verifies.
    """
    # Plain SQL through the same connection: this runs for every event of a rebuild and of
    # a pull, where building SQLAlchemy ``select()``s per call was most of the cost.
    raw = raw_connection(conn)
    data = event.data

    def receipt(key: str) -> Any:
        return raw.execute(_RECEIPT_EVENT, (key,)).fetchone()

    if event.kind is Kind.SALE_COMMITTED:
        row = receipt(f"sale:{data.get('receipt_id')}")
        if row is not None:
            return (
                "receipt_key_taken",
                f"receipt {data.get('receipt_id')!r} is already used here by event "
                f"{id_text(row[0])}; the sale's balances count, its receipt is not kept "
                "here",
            )
    elif event.kind is Kind.REFUND_COMMITTED:
        if receipt(f"sale:{data.get('receipt_id')}") is None:
            return ("refund_of_unknown_sale", "the refunded sale is not held here")
        if receipt(f"refund:{data.get('refund_id')}") is not None:
            return ("refund_key_taken", f"refund id {data.get('refund_id')!r} already used here")
    elif event.kind is Kind.CARD_ISSUED:
        if raw.execute(_CARD_EXISTS, (data.get("code"),)).fetchone() is not None:
            return ("card_code_taken", f"card {data.get('code')} already belongs to a customer")
    elif (
        event.kind is Kind.CUSTOMER_ENROLLED
        and raw.execute(_CUSTOMER_EXISTS, (event.customer_id,)).fetchone() is not None
    ):
        return ("customer_exists", f"customer {event.customer_id} already exists")
    return None


def rebuild_into(
    conn: Connection,
    events: Iterable[Event],
    *,
    on_baseline: bool = False,
    max_states: int | None = None,
) -> None:
    """Fill empty projection tables on ``conn`` from ``events`` in order. ``on_baseline``:
    the tables hold a bootstrapped till's baseline (``ledger.snapshot``) and the events
    come after it, so each customer's state starts from the stored one.

    ``max_states`` bounds the folded states held in memory (``ledger verify`` on a ledger of
    millions of customers): the least recently used state is written to ``conn`` and read
    back when its customer appears again."""
    states: dict[str, CustomerState] = {}
    written: set[str] = set()  # customers whose state ``conn`` already holds

    def stored(customer_id: str) -> CustomerState:
        if on_baseline or customer_id in written:
            return load_state(conn, customer_id)
        return CustomerState(customer_id)

    def write(state: CustomerState) -> None:
        store_state(conn, stored(state.customer_id), state)
        written.add(state.customer_id)

    for event in events:
        if side_table_problem(conn, event) is None:
            apply_side_tables(conn, event)
        else:
            apply_shared(conn, event)
        if event.customer_id is not None and event.postings:
            state = states.pop(event.customer_id, None)
            if state is None:
                state = stored(event.customer_id)
            states[event.customer_id] = state  # most recently used last
            state.apply(event)
            if max_states is not None and len(states) > max_states:
                write(states.pop(next(iter(states))))
    for state in states.values():
        write(state)


def snapshot(conn: Connection) -> dict[str, Any]:
    """Projection contents in a comparable form (receipts without the cached response)."""
    return {
        "customers": sorted(tuple(r) for r in conn.execute(select(schema.customers))),
        "cards": sorted(tuple(r) for r in conn.execute(select(schema.cards))),
        "balances": sorted(
            tuple(r)
            for r in conn.execute(select(schema.balances).where(schema.balances.c.balance != 0))
        ),
        # Stored forms (``codec``) as they are: bytes, integers or texts, sorted by repr.
        "lots": sorted((tuple(r) for r in conn.execute(select(schema.lots))), key=repr),
        "usage": sorted(tuple(r) for r in conn.execute(select(schema.usage))),
        "coupons": sorted(tuple(r) for r in conn.execute(select(schema.coupons))),
        "referrals": sorted(tuple(r) for r in conn.execute(select(schema.referrals))),
        "receipts": sorted(
            (r.key, r.event_id, json.dumps(json.loads(r.refunded), sort_keys=True))
            for r in conn.execute(select(schema.receipts))
        ),
        "redemptions": sorted(
            (tuple(r) for r in conn.execute(select(schema.redemptions))), key=repr
        ),
    }


# The projections ``ledger verify`` compares with a rebuild, in ``snapshot``'s forms.
COMPARED = (
    "customers",
    "cards",
    "balances",
    "lots",
    "usage",
    "coupons",
    "referrals",
    "receipts",
    "redemptions",
)


def compared_rows(conn: Connection, name: str) -> Iterator[tuple[Any, ...]]:
    """One projection's rows in ``snapshot``'s form, streamed in SQL order (primary key
    first, so SQLite walks the index instead of sorting); both sides of a comparison come in
    the same order."""
    table = schema.metadata.tables[name]
    keys = list(table.primary_key.columns)
    order = keys + [c for c in table.c if c not in keys]
    if name == "receipts":
        query = select(table.c.key, table.c.event_id, table.c.refunded).order_by(*order)
        for key, event_id, refunded in conn.execute(query, execution_options={"yield_per": 2000}):
            yield key, event_id, json.dumps(json.loads(refunded), sort_keys=True)
        return
    query = select(table).order_by(*order)
    if name == "balances":
        query = query.where(table.c.balance != 0)
    for row in conn.execute(query, execution_options={"yield_per": 2000}):
        yield tuple(row)


def usage_counts(conn: Connection, keys: list[str]) -> dict[str, int]:
    """Ledger-wide use counters for ``keys`` (absent keys are not in the answer)."""
    if not keys:
        return {}
    marks = ",".join("?" * len(keys))
    rows = raw_connection(conn).execute(
        f"SELECT key, count FROM usage WHERE key IN ({marks})", keys
    )
    return {str(key): int(count) for key, count in rows.fetchall()}


def open_coupons(conn: Connection, customer_id: str) -> list[dict[str, Any]]:
    """Coupons issued to a customer and not yet used (expired ones included)."""
    rows = raw_connection(conn).execute(_OPEN_COUPONS, (customer_id,)).fetchall()
    return [
        {"serial": serial, "program": program, "code": code, "expires_at": expires_at}
        for serial, program, code, expires_at in rows
    ]


def referrer_of(conn: Connection, code: str) -> str | None:
    row = conn.execute(
        select(schema.referrals.c.customer_id).where(schema.referrals.c.code == code)
    ).first()
    return None if row is None else str(row.customer_id)
