"""Projections: the tables derived from events, updated on append and rebuilt by verify.

``Projector`` applies events to projection rows through one interface used both by the
incremental path (in the append transaction) and by the rebuild (into a scratch copy).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from pos_loyalty.domain.events import LOT_UNITS, Event, Kind, Unit
from pos_loyalty.domain.state import CustomerState, Lot, PointsAccount

from . import schema


def load_state(conn: Connection, customer_id: str) -> CustomerState:
    """The folded state of one customer, read from the projection tables."""
    state = CustomerState(customer_id)
    for row in conn.execute(
        select(schema.balances).where(schema.balances.c.customer_id == customer_id)
    ):
        unit = Unit(row.unit)
        if unit is Unit.STAMPS:
            state.stamps[row.program] = row.balance
        elif unit is Unit.POINTS:
            state.points[row.program] = PointsAccount(balance=row.balance)
        elif unit in LOT_UNITS:
            state.lotted[(row.program, unit)] = PointsAccount(balance=row.balance)
        else:
            state.counters[(row.program, unit)] = row.balance
    accounts = state.all_accounts()
    # Lots are the one projection that grows with a customer's history (one per earning
    # sale until it expires), read on every commit: fetched in one go on the DB-API cursor,
    # as SQLAlchemy's per-row result objects cost several times the query itself.
    rows = conn.exec_driver_sql(
        "SELECT lot_id, program, earned_at, expires_at, remaining FROM lots WHERE customer_id = ?",
        (customer_id,),
    ).fetchall()
    parse = datetime.fromisoformat
    for lot_id, program, earned_at, expires_at, remaining in rows:
        account = accounts.get(program) or state.points.setdefault(program, PointsAccount())
        account.lots[lot_id] = Lot(
            lot_id, parse(earned_at), parse(expires_at) if expires_at else None, remaining
        )
    return state


def store_state(conn: Connection, before: CustomerState, after: CustomerState) -> None:
    """Write the difference between two states of one customer."""
    cid = after.customer_id
    old = before.balances()
    for (program, unit), value in after.balances().items():
        if (program, unit) not in old:
            conn.execute(
                insert(schema.balances).values(
                    customer_id=cid, program=program, unit=unit.value, balance=value
                )
            )
        elif old[(program, unit)] != value:
            conn.execute(
                update(schema.balances)
                .where(
                    schema.balances.c.customer_id == cid,
                    schema.balances.c.program == program,
                    schema.balances.c.unit == unit.value,
                )
                .values(balance=value)
            )
    old_lots = {
        lot.lot_id: (prog, lot)
        for prog, acc in before.all_accounts().items()
        for lot in acc.lots.values()
    }
    new_lots = {
        lot.lot_id: (prog, lot)
        for prog, acc in after.all_accounts().items()
        for lot in acc.lots.values()
    }
    for lot_id in old_lots.keys() - new_lots.keys():
        conn.execute(delete(schema.lots).where(schema.lots.c.lot_id == lot_id))
    for lot_id, (program, lot) in new_lots.items():
        if lot_id not in old_lots:
            conn.execute(
                insert(schema.lots).values(
                    lot_id=lot_id,
                    customer_id=cid,
                    program=program,
                    earned_at=lot.earned_at.isoformat(),
                    expires_at=lot.expires_at.isoformat() if lot.expires_at else None,
                    remaining=lot.remaining,
                )
            )
        elif old_lots[lot_id][1].remaining != lot.remaining:
            conn.execute(
                update(schema.lots)
                .where(schema.lots.c.lot_id == lot_id)
                .values(remaining=lot.remaining)
            )


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
        conn.execute(
            insert(schema.receipts).values(
                key=f"sale:{data['receipt_id']}",
                event_id=event.id,
                request_hash=data["request_hash"],
                refunded="{}",
                response=response or b"",
            )
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
    for key, count in sorted(data.get("uses", {}).items()):
        if not count:
            continue
        updated = conn.execute(
            update(schema.usage)
            .where(schema.usage.c.key == key)
            .values(count=schema.usage.c.count + int(count))
        )
        if updated.rowcount == 0:
            conn.execute(insert(schema.usage).values(key=key, count=int(count)))
    for coupon in data.get("coupons", ()):
        conn.execute(
            insert(schema.coupons).values(
                serial=coupon["serial"],
                program=coupon["program"],
                customer_id=event.customer_id,
                code=coupon["code"],
                issued_at=event.at.isoformat(),
                expires_at=coupon["expires_at"],
            )
        )
    if event.kind is Kind.CUSTOMER_ENROLLED and data.get("referral_code"):
        conn.execute(
            insert(schema.referrals).values(
                code=data["referral_code"], customer_id=event.customer_id
            )
        )


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
    rows = conn.execute(select(schema.usage).where(schema.usage.c.key.in_(keys)))
    return {str(row[0]): int(row[1]) for row in rows}


def open_coupons(conn: Connection, customer_id: str) -> list[dict[str, Any]]:
    """Coupons issued to a customer and not yet used (expired ones included)."""
    used = schema.usage.c.key
    rows = conn.execute(
        select(schema.coupons)
        .where(schema.coupons.c.customer_id == customer_id)
        .order_by(schema.coupons.c.issued_at, schema.coupons.c.serial)
    )
    out = []
    for row in rows:
        spent = conn.execute(select(used).where(used == f"coupon:{row.serial}")).first()
        if spent is None:
            out.append(
                {
                    "serial": row.serial,
                    "program": row.program,
                    "code": row.code,
                    "expires_at": row.expires_at,
                }
            )
    return out


def referrer_of(conn: Connection, code: str) -> str | None:
    row = conn.execute(
        select(schema.referrals.c.customer_id).where(schema.referrals.c.code == code)
    ).first()
    return None if row is None else str(row.customer_id)
