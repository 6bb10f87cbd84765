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

from pos_loyalty.domain.events import Event, Kind, Unit
from pos_loyalty.domain.state import CustomerState, Lot, PointsAccount

from . import schema


def load_state(conn: Connection, customer_id: str) -> CustomerState:
    """The folded state of one customer, read from the projection tables."""
    state = CustomerState(customer_id)
    for row in conn.execute(
        select(schema.balances).where(schema.balances.c.customer_id == customer_id)
    ):
        if row.unit == Unit.STAMPS.value:
            state.stamps[row.program] = row.balance
        else:
            state.points[row.program] = PointsAccount(balance=row.balance)
    for row in conn.execute(select(schema.lots).where(schema.lots.c.customer_id == customer_id)):
        account = state.points.setdefault(row.program, PointsAccount())
        account.lots[row.lot_id] = Lot(
            row.lot_id,
            datetime.fromisoformat(row.earned_at),
            datetime.fromisoformat(row.expires_at) if row.expires_at else None,
            row.remaining,
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
        lot.lot_id: (prog, lot) for prog, acc in before.points.items() for lot in acc.lots.values()
    }
    new_lots = {
        lot.lot_id: (prog, lot) for prog, acc in after.points.items() for lot in acc.lots.values()
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


def apply_side_tables(conn: Connection, event: Event, response: str | None = None) -> None:
    """Customers, cards and receipts rows that follow from ``event``."""
    data = event.data
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
                response=response or "{}",
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
                response=response or "{}",
            )
        )


def rebuild_into(conn: Connection, events: Iterable[Event]) -> None:
    """Fill empty projection tables on ``conn`` from ``events`` in order."""
    states: dict[str, CustomerState] = {}
    for event in events:
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
        "receipts": sorted(
            (r.key, r.event_id, r.request_hash, json.dumps(json.loads(r.refunded), sort_keys=True))
            for r in conn.execute(select(schema.receipts))
        ),
    }
