"""The commit path's shortcuts give exactly what the plain forms give.

- ``store._hash_and_payload`` assembles an event's hashed body and its payload from one
  encoding of the postings and data: the same bytes as ``codec.chain_hash`` and
  ``codec.payload_of`` for any event.
- ``CustomerState.copy(track=True)`` records which lots change, and ``store._touched`` writes
  only those: the same rows as diffing every lot.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from pos_loyalty.domain.events import Event, Kind, Posting, Unit
from pos_loyalty.domain.state import CustomerState
from pos_loyalty.ledger import schema
from pos_loyalty.ledger.codec import chain_hash, payload_of
from pos_loyalty.ledger.projections import store_state
from pos_loyalty.ledger.store import Ledger, _hash_and_payload, _touched

T0 = datetime(2026, 1, 1, tzinfo=UTC)

texts = st.text(max_size=12)
json_scalars = st.none() | st.booleans() | st.integers() | texts
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2199, 1, 1), timezones=st.just(UTC)
) | st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2199, 1, 1)).map(
    lambda d: d.replace(tzinfo=UTC).astimezone(timezone(timedelta(hours=2)))
)
postings = st.builds(
    Posting,
    program=texts,
    unit=st.sampled_from(list(Unit)),
    delta=st.integers(-(10**9), 10**9),
    lot=st.none() | texts,
    expires_at=st.none() | moments,
)
events = st.builds(
    Event,
    id=texts,
    kind=st.sampled_from(list(Kind)),
    terminal_id=texts,
    at=moments,
    customer_id=st.none() | texts,
    key=st.none() | texts,
    postings=st.lists(postings, max_size=4).map(tuple),
    data=st.dictionaries(texts, json_values, max_size=5),
    seq=st.integers(0, 2**40),
)


@given(events, st.binary(min_size=32, max_size=32))
def test_assembled_hash_and_payload_equal_codecs(event: Event, prev: bytes) -> None:
    digest, payload = _hash_and_payload(prev, event)
    assert digest == chain_hash(prev, event)
    assert payload == payload_of(event)


# A points account's operations: credit a new lot, credit an existing lot again, debit.
operations = st.lists(
    st.tuples(
        st.sampled_from(["credit", "debit"]),
        st.sampled_from(["points", "other"]),
        st.integers(1, 60),
        st.integers(0, 5),  # which event id (a repeat credits the same lot again)
        st.integers(-5, 400),  # expiry in days (<= 0: never)
    ),
    max_size=12,
)


def _apply(state: CustomerState, ops: list[tuple[str, str, int, int, int]], base: int) -> None:
    for n, (op, program, amount, which, days) in enumerate(ops):
        at = T0 + timedelta(days=base + n)
        expires = at + timedelta(days=days) if days > 0 else None
        delta = amount if op == "credit" else -amount
        ev = Event(
            f"00000000-0000-7000-8000-{base + which:012d}",
            Kind.ACCOUNT_ADJUSTED,
            "till-1",
            at,
            "c1",
            postings=(Posting(program, Unit.POINTS, delta, expires_at=expires),),
        )
        state.apply(ev)


def _rows(ledger: Ledger) -> dict[str, Any]:
    with ledger.reader() as tx:
        return {
            "lots": sorted((tuple(r) for r in tx.conn.execute(select(schema.lots))), key=repr),
            "balances": sorted(tuple(r) for r in tx.conn.execute(select(schema.balances))),
        }


@settings(max_examples=60, deadline=None)
@given(operations, operations)
def test_tracked_writes_equal_a_full_diff(
    tmp_path_factory: Any, first: list[Any], second: list[Any]
) -> None:
    tmp: Path = tmp_path_factory.mktemp("tracked")
    results = []
    for tracked in (False, True):
        ledger = Ledger(tmp / f"{tracked}.sqlite", "till-1")
        try:
            start = CustomerState("c1")
            before = CustomerState("c1")
            _apply(before, first, 0)
            with ledger.transaction() as tx:
                store_state(tx.conn, start, before)
            after = before.copy(track=tracked)
            _apply(after, second, 100)
            with ledger.transaction() as tx:
                if tracked:
                    store_state(tx.conn, *_touched(before, after))
                else:
                    store_state(tx.conn, before, after)
            results.append(_rows(ledger))
            assert all(acc.changed is None for acc in after.all_accounts().values())
        finally:
            ledger.close()
    assert results[0] == results[1]
