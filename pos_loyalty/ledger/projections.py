"""Projections: the tables derived from events, updated on append and rebuilt by verify.

``Projector`` applies events to projection rows through one interface used both by the
incremental path (in the append transaction) and by the rebuild (into a scratch copy).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, insert, select, update

from pos_loyalty.domain.events import LOT_UNITS, Event, Kind, Unit
from pos_loyalty.domain.state import CustomerState, Lot, PointsAccount

from . import schema


def raw_connection(conn: Connection) -> sqlite3.Connection:
    """The DB-API (``sqlite3``) connection under ``conn``, in the same transaction.

    The hot reads and writes (look-up, quote, commit) run on it with plain SQL: SQLAlchemy's
    per-statement work costs several times what SQLite spends on these by-key statements.
    """
    return cast(sqlite3.Connection, conn.connection.driver_connection)


_BALANCES = "SELECT program, unit, balance FROM balances WHERE customer_id = ?"
_LOTS = "SELECT lot_id, program, earned_at, expires_at, remaining FROM lots WHERE customer_id = ?"
_INSERT_BALANCE = "INSERT INTO balances (customer_id, program, unit, balance) VALUES (?, ?, ?, ?)"
_UPDATE_BALANCE = (
    "UPDATE balances SET balance = ? WHERE customer_id = ? AND program = ? AND unit = ?"
)
_DELETE_LOT = "DELETE FROM lots WHERE lot_id = ?"
_INSERT_LOT = (
    "INSERT INTO lots (lot_id, customer_id, program, earned_at, expires_at, remaining) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_UPDATE_LOT = "UPDATE lots SET remaining = ? WHERE lot_id = ?"
_OPEN_COUPONS = (
    "SELECT serial, program, code, expires_at FROM coupons WHERE customer_id = ? "
    "AND NOT EXISTS (SELECT 1 FROM usage WHERE usage.key = 'coupon:' || coupons.serial) "
    "ORDER BY issued_at, serial"
)

_INSERT_RECEIPT = (
    "INSERT INTO receipts (key, event_id, request_hash, refunded, response) VALUES (?, ?, ?, ?, ?)"
)
_ADD_USAGE = "UPDATE usage SET count = count + ? WHERE key = ?"
_INSERT_USAGE = "INSERT INTO usage (key, count) VALUES (?, ?)"
_INSERT_COUPON = (
    "INSERT INTO coupons (serial, program, customer_id, code, issued_at, expires_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_REFERRAL = "INSERT INTO referrals (code, customer_id) VALUES (?, ?)"


def load_state(conn: Connection, customer_id: str) -> CustomerState:
    """The folded state of one customer, read from the projection tables."""
    state = CustomerState(customer_id)
    raw = raw_connection(conn)
    for program, unit_name, balance in raw.execute(_BALANCES, (customer_id,)).fetchall():
        unit = Unit(unit_name)
        if unit is Unit.STAMPS:
            state.stamps[program] = balance
        elif unit is Unit.POINTS:
            state.points[program] = PointsAccount(balance=balance)
        elif unit in LOT_UNITS:
            state.lotted[(program, unit)] = PointsAccount(balance=balance)
        else:
            state.counters[(program, unit)] = balance
    accounts = state.all_accounts()
    # Lots are the one projection that grows with a customer's history (one per earning
    # sale until it expires), read on every commit: fetched in one go.
    rows = raw.execute(_LOTS, (customer_id,)).fetchall()
    parse = datetime.fromisoformat
    lots_of = {program: account.lots for program, account in accounts.items()}
    for lot_id, program, earned_at, expires_at, remaining in rows:
        lots = lots_of.get(program)
        if lots is None:
            lots = lots_of[program] = state.points.setdefault(program, PointsAccount()).lots
        lots[lot_id] = Lot(
            lot_id, parse(earned_at), parse(expires_at) if expires_at else None, remaining
        )
    return state


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
    # Lot ids embed the program (``ids.lot_id``): one id space across the accounts.
    old_lots: dict[str, Lot] = {}
    for acc in before.all_accounts().values():
        old_lots.update(acc.lots)
    new_lots: dict[str, Lot] = {}
    new_accounts = after.all_accounts()
    for acc in new_accounts.values():
        new_lots.update(acc.lots)
    for lot_id in old_lots.keys() - new_lots.keys():
        raw.execute(_DELETE_LOT, (lot_id,))
    for program, acc in new_accounts.items():
        for lot_id, lot in acc.lots.items():
            known = old_lots.get(lot_id)
            if known is None:
                raw.execute(
                    _INSERT_LOT,
                    (
                        lot_id,
                        cid,
                        program,
                        lot.earned_at.isoformat(),
                        lot.expires_at.isoformat() if lot.expires_at else None,
                        lot.remaining,
                    ),
                )
            elif known.remaining != lot.remaining:
                raw.execute(_UPDATE_LOT, (lot.remaining, lot_id))


def apply_side_tables(conn: Connection, event: Event, response: bytes | None = None) -> None:
    """Customers, cards and receipts rows that follow from ``event``."""
    data = event.data
    _apply_catalog(conn, event)
    if event.kind is Kind.CUSTOMER_ENROLLED:
        conn.execute(
            insert(schema.customers).values(
                customer_id=event.customer_id,
                enrolled_at=event.at.isoformat(),
                profile=json.dumps(data.get("profile", {}), sort_keys=True),
            )
        )
    elif event.kind is Kind.CARD_ISSUED:
        conn.execute(
            insert(schema.cards).values(
                code=data["code"],
                customer_id=event.customer_id,
                status="active",
                issued_at=event.at.isoformat(),
            )
        )
    elif event.kind is Kind.CARD_BLOCKED:
        conn.execute(
            update(schema.cards)
            .where(schema.cards.c.code == data["code"])
            .values(status="blocked", reason=data.get("reason"))
        )
    elif event.kind is Kind.SALE_COMMITTED:
        raw_connection(conn).execute(
            _INSERT_RECEIPT,
            (f"sale:{data['receipt_id']}", event.id, data["request_hash"], "{}", response or b""),
        )
    elif event.kind is Kind.REFUND_COMMITTED:
        sale_key = f"sale:{data['receipt_id']}"
        row = conn.execute(
            select(schema.receipts.c.refunded).where(schema.receipts.c.key == sale_key)
        ).one()
        refunded: dict[str, int] = json.loads(row.refunded)
        for index, units in data["units"].items():
            refunded[index] = refunded.get(index, 0) + int(units)
        conn.execute(
            update(schema.receipts)
            .where(schema.receipts.c.key == sale_key)
            .values(refunded=json.dumps(refunded, sort_keys=True))
        )
        conn.execute(
            insert(schema.receipts).values(
                key=f"refund:{data['refund_id']}",
                event_id=event.id,
                request_hash=data["request_hash"],
                refunded="{}",
                response=response or b"",
            )
        )


def _apply_catalog(conn: Connection, event: Event) -> None:
    """Usage counters, issued coupons and referral codes that follow from ``event``."""
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
    if event.kind is Kind.CUSTOMER_ENROLLED and data.get("referral_code"):
        raw.execute(_INSERT_REFERRAL, (data["referral_code"], event.customer_id))


def side_table_problem(conn: Connection, event: Event) -> tuple[str, str] | None:
    """Why ``apply_side_tables`` cannot take this (remote) event here, or None.

    The incremental path (sync) and the rebuild apply the same rule, in the same order, so a
    till holding colliding receipts from other tills still verifies.
    """
    r = schema.receipts
    data = event.data

    def receipt(key: str) -> Any:
        return conn.execute(select(r.c.event_id).where(r.c.key == key)).first()

    if event.kind is Kind.SALE_COMMITTED:
        row = receipt(f"sale:{data.get('receipt_id')}")
        if row is not None:
            return (
                "receipt_key_taken",
                f"receipt {data.get('receipt_id')!r} is already used here by event "
                f"{row.event_id}; the sale's balances count, its receipt is not kept here",
            )
    elif event.kind is Kind.REFUND_COMMITTED:
        if receipt(f"sale:{data.get('receipt_id')}") is None:
            return ("refund_of_unknown_sale", "the refunded sale is not held here")
        if receipt(f"refund:{data.get('refund_id')}") is not None:
            return ("refund_key_taken", f"refund id {data.get('refund_id')!r} already used here")
    elif event.kind is Kind.CARD_ISSUED:
        row = conn.execute(
            select(schema.cards.c.customer_id).where(schema.cards.c.code == data.get("code"))
        ).first()
        if row is not None:
            return ("card_code_taken", f"card {data.get('code')} already belongs to a customer")
    elif event.kind is Kind.CUSTOMER_ENROLLED:
        row = conn.execute(
            select(schema.customers.c.customer_id).where(
                schema.customers.c.customer_id == event.customer_id
            )
        ).first()
        if row is not None:
            return ("customer_exists", f"customer {event.customer_id} already exists")
    return None


def rebuild_into(conn: Connection, events: Iterable[Event]) -> None:
    """Fill empty projection tables on ``conn`` from ``events`` in order."""
    states: dict[str, CustomerState] = {}
    for event in events:
        if side_table_problem(conn, event) is None:
            apply_side_tables(conn, event)
        if event.customer_id is not None and event.postings:
            states.setdefault(event.customer_id, CustomerState(event.customer_id)).apply(event)
    for state in states.values():
        store_state(conn, CustomerState(state.customer_id), state)


def snapshot(conn: Connection) -> dict[str, Any]:
    """Projection contents in a comparable form (receipts without the cached response)."""
    return {
        "customers": sorted(tuple(r) for r in conn.execute(select(schema.customers))),
        "cards": sorted(tuple(r) for r in conn.execute(select(schema.cards))),
        "balances": sorted(
            tuple(r)
            for r in conn.execute(select(schema.balances).where(schema.balances.c.balance != 0))
        ),
        "lots": sorted(tuple(r) for r in conn.execute(select(schema.lots))),
        "usage": sorted(tuple(r) for r in conn.execute(select(schema.usage))),
        "coupons": sorted(tuple(r) for r in conn.execute(select(schema.coupons))),
        "referrals": sorted(tuple(r) for r in conn.execute(select(schema.referrals))),
        "receipts": sorted(
            (r.key, r.event_id, r.request_hash, json.dumps(json.loads(r.refunded), sort_keys=True))
            for r in conn.execute(select(schema.receipts))
        ),
    }


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
