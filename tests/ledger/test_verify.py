"""``ledger verify`` streams: bounded folded states, a scratch file, a row-by-row merge."""

from __future__ import annotations

import sqlite3
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine

from pos_loyalty.domain.refund import RefundRequestLine
from pos_loyalty.ledger import schema
from pos_loyalty.ledger import verify as verify_module
from pos_loyalty.ledger.codec import event_from_row
from pos_loyalty.ledger.projections import rebuild_into, snapshot
from pos_loyalty.ledger.verify import _merge_differences, rebuild, verify
from pos_loyalty.service import Profile, RefundRequest

from .test_ledger import T0, open_service, sale

# --------------------------------------------------------------------------- the merge

values = st.one_of(
    st.none(),
    st.integers(-(2**62), 2**62),
    st.text(max_size=4),
    st.binary(max_size=4),
)
rows_of = st.lists(st.tuples(values, values), max_size=12)


def sqlite_sorted(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Distinct rows in the order SQLite's ORDER BY gives them."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a, b)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", rows)
    ordered = conn.execute("SELECT DISTINCT a, b FROM t ORDER BY a, b").fetchall()
    conn.close()
    return ordered


@given(rows_of, rows_of)
def test_merge_finds_exactly_the_rows_only_on_one_side(
    a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]
) -> None:
    left, right = sqlite_sorted(a), sqlite_sorted(b)
    only_left, only_right = _merge_differences(iter(left), iter(right), limit=len(a) + len(b))
    assert only_left == [r for r in left if r not in right]
    assert only_right == [r for r in right if r not in left]


def test_merge_names_at_most_a_few_rows() -> None:
    only_left, only_right = _merge_differences(
        iter([(n,) for n in range(100)]), iter([(n,) for n in range(50, 200)])
    )
    assert only_left == [(0,), (1,), (2,)]
    assert only_right == [(100,), (101,), (102,)]


# --------------------------------------------------------------------------- the fold

# One step on a ledger shared by a few customers: (customer, kind, amount, days later).
steps = st.lists(
    st.tuples(
        st.integers(0, 5),
        st.sampled_from(["sale", "redeem", "refund", "adjust"]),
        st.integers(1, 40),
        st.integers(0, 60),  # 25 steps stay before the tests' clock (2030)
    ),
    min_size=1,
    max_size=25,
)


def run(data_dir: Path, plan: list[tuple[int, str, int, int]]) -> tuple[Any, list[str]]:
    service = open_service(data_dir)
    cards = [service.enrol(Profile(name=f"c{n}"), at=T0)["card"]["code"] for n in range(6)]
    at = T0
    sold: list[str] = []
    for n, (who, kind, amount, days) in enumerate(plan):
        at += timedelta(days=days, minutes=1)
        card = cards[who]
        if kind == "refund" and sold:
            service.refund(
                RefundRequest(
                    f"F-{n}",
                    sold.pop(amount % len(sold)),
                    (RefundRequestLine("cake", 1),),
                    at,
                    {"n": n},
                )
            )
        elif kind == "adjust":
            customer = service.lookup(card, at)["customer"]["id"]
            service.adjust(customer, "points", amount - 20 or 1, "correction", at)
        else:
            balance = service.lookup(card, at)["balances"]["points"]["balance"]
            redeem = min(balance, amount) if kind == "redeem" and balance > 0 else 0
            sale(service, f"R-{n}", card, at, ("cake", "bakery", 2, 100 * amount), redeem=redeem)
            sold.append(f"R-{n}")
    return service, cards


def rebuilt_snapshot(service: Any, max_states: int | None) -> dict[str, Any]:
    with service.ledger.reader() as tx:
        events = [
            event_from_row(r, tx.dicts)
            for r in tx.conn.execute(schema.events.select().order_by(schema.events.c.pos))
        ]
    scratch = create_engine("sqlite://")
    schema.metadata.create_all(scratch)
    with scratch.begin() as conn:
        rebuild_into(conn, events, max_states=max_states)
        result = snapshot(conn)
    scratch.dispose()
    return result


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps, st.integers(1, 3))
def test_a_bounded_fold_equals_the_unbounded_one(
    plan: list[tuple[int, str, int, int]], max_states: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        service, _ = run(Path(tmp), plan)
        try:
            assert rebuilt_snapshot(service, max_states) == rebuilt_snapshot(service, None)
            with service.ledger.reader() as tx:
                assert rebuilt_snapshot(service, None) == snapshot(tx.conn)
        finally:
            service.ledger.close()


# --------------------------------------------------------------------------- verify


@pytest.fixture
def busy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A ledger of six customers, verified while holding one folded state at a time."""
    monkeypatch.setattr(verify_module, "MAX_STATES", 1)
    plan = [(n % 6, "sale", 5 + n, n % 3) for n in range(30)]
    plan += [(1, "redeem", 30, 1), (2, "refund", 3, 0), (3, "adjust", 9, 400)]
    service, cards = run(tmp_path / "till", plan)
    service.test_cards = cards
    yield service
    service.ledger.close()


def test_verify_passes_with_one_state_in_memory(busy: Any, tmp_path: Path) -> None:
    report = verify(busy.ledger)
    assert report.ok, report.problems
    with busy.ledger.reader() as tx:
        assert report.events == tx.count_events()
    # the scratch file went next to the ledger and is gone afterwards
    assert sorted(p.name for p in busy.ledger.path.parent.iterdir() if "verify" in p.name) == []


def test_verify_names_a_changed_lot(busy: Any) -> None:
    with busy.ledger.transaction() as tx:
        row = tx.raw.execute("SELECT customer_id, program, lot FROM lots LIMIT 1").fetchone()
        tx.raw.execute(
            "UPDATE lots SET remaining = remaining + 7 "
            "WHERE customer_id = ? AND program = ? AND lot = ?",
            row,
        )
    report = verify(busy.ledger)
    assert not report.ok
    assert "projection 'lots'" in str(report.problems[0])
    assert len(report.problems) == 1


def test_verify_names_a_missing_and_an_extra_card(busy: Any) -> None:
    with busy.ledger.transaction() as tx:
        (code,) = tx.raw.execute("SELECT code FROM cards ORDER BY code LIMIT 1").fetchone()
        tx.raw.execute("DELETE FROM cards WHERE code = ?", (code,))
        tx.raw.execute(
            "INSERT INTO cards SELECT 'PLFORGED', customer_id, status, issued_at, reason "
            "FROM cards LIMIT 1"
        )
    problem = str(verify(busy.ledger).problems[0])
    assert "projection 'cards'" in problem
    assert "PLFORGED" in problem.split("rebuilt but not stored")[0]
    assert code in problem.split("rebuilt but not stored")[1]


def test_scratch_folder_can_be_chosen(busy: Any, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert verify(busy.ledger, scratch_dir=scratch).ok
    assert list(scratch.iterdir()) == []


def test_rebuild_keeps_every_first_answer(busy: Any) -> None:
    first = T0 + timedelta(minutes=1)  # the plan's first step: card 0, a 2 x 5.00 cake sale
    answer = sale(busy, "R-0", busy.test_cards[0], first, ("cake", "bakery", 2, 500))
    with busy.ledger.reader() as tx:
        events = tx.count_events()
        before = tx.raw.execute("SELECT key, response FROM receipts ORDER BY key").fetchall()
    with busy.ledger.transaction() as tx:
        tx.raw.execute("UPDATE balances SET balance = balance + 5")
    rebuild(busy.ledger)
    assert verify(busy.ledger).ok
    with busy.ledger.reader() as tx:
        assert tx.count_events() == events
        assert tx.raw.execute("SELECT key, response FROM receipts ORDER BY key").fetchall() == (
            before
        )
    assert sale(busy, "R-0", busy.test_cards[0], first, ("cake", "bakery", 2, 500)) == answer
