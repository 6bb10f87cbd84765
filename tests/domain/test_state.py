"""State folding: points lots, soonest-expiring first, debt repaid by later credits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from pos_loyalty.domain.events import Event, Kind, Posting, Unit
from pos_loyalty.domain.ids import LIFETIME_LOT, lot_id
from pos_loyalty.domain.state import LIFETIME_EARNED, CustomerState, PointsAccount, fold

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def day(n: int) -> datetime:
    return T0 + timedelta(days=n)


def remaining(account: PointsAccount) -> dict[str, int]:
    return {lot.lot_id: lot.remaining for lot in account.lots.values()}


def test_credit_makes_a_lot() -> None:
    acc = PointsAccount()
    acc.credit("a", 100, day(0), day(365))
    assert acc.balance == 100
    lot = acc.lots["a"]
    assert (lot.earned_at, lot.expires_at, lot.remaining) == (day(0), day(365), 100)


def test_debit_consumes_the_soonest_expiring_lot_first() -> None:
    acc = PointsAccount()
    acc.credit("late", 100, day(10), day(400))  # earned first in this list, expires later
    acc.credit("soon", 50, day(0), day(100))
    acc.credit("never", 30, day(5), None)
    acc.debit(70)
    assert acc.balance == 110
    # "soon" (50) is used up and gone; the other 20 come from "late"; "never" is last
    assert remaining(acc) == {"late": 80, "never": 30}
    acc.debit(85)
    assert remaining(acc) == {"never": 25}


def test_debit_prefers_the_named_lot() -> None:
    acc = PointsAccount()
    acc.credit("soon", 50, day(0), day(100))
    acc.credit("late", 100, day(10), day(400))
    acc.debit(60, prefer="late")
    assert remaining(acc) == {"soon": 50, "late": 40}
    # a preferred lot with too little left: the rest comes soonest-first
    acc.debit(45, prefer="late")
    assert remaining(acc) == {"soon": 45}


def test_debt_is_repaid_by_a_later_credit() -> None:
    acc = PointsAccount()
    acc.credit("a", 30, day(0), day(365))
    acc.debit(50)  # e.g. a refund reversing points already spent
    assert acc.balance == -20
    assert acc.lots == {}
    acc.credit("b", 15, day(1), day(366))  # all of it repays debt: no lot
    assert acc.balance == -5
    assert acc.lots == {}
    acc.credit("c", 12, day(2), day(367))  # 5 repay the debt, 7 make a lot
    assert acc.balance == 7
    assert remaining(acc) == {"c": 7}


def test_due_spendable_and_expiring() -> None:
    acc = PointsAccount()
    acc.credit("a", 10, day(0), day(365))
    acc.credit("b", 20, day(100), day(465))
    acc.credit("c", 40, day(100), None)
    assert acc.spendable(day(364)) == 70
    assert [lot.lot_id for lot in acc.due(day(365))] == ["a"]
    assert acc.spendable(day(365)) == 60
    assert acc.spendable(day(500)) == 40
    assert acc.expiring_between(day(300), day(465)) == 30
    assert acc.expiring_between(day(365), day(465)) == 20


def _event(eid: str, customer: str, *postings: Posting, at: datetime = T0) -> Event:
    return Event(eid, Kind.ACCOUNT_ADJUSTED, "till-1", at, customer, postings=postings)


def test_fold_applies_postings_of_one_customer_only() -> None:
    exp = day(365)
    events = [
        _event("e1", "c1", Posting("points", Unit.POINTS, 40, expires_at=exp)),
        _event("e2", "c2", Posting("points", Unit.POINTS, 999)),
        _event("e3", "c1", Posting("coffee", Unit.STAMPS, 3)),
        _event("e4", "c1", Posting("points", Unit.POINTS, -15), Posting("coffee", Unit.STAMPS, -1)),
    ]
    state = fold("c1", events)
    assert state.balances() == {("points", Unit.POINTS): 25, ("coffee", Unit.STAMPS): 2}
    # a credit's lot id is derived from the event id and the program
    assert remaining(state.points["points"]) == {lot_id("e1", "points"): 25}
    assert state.points["points"].lots[lot_id("e1", "points")].expires_at == exp


def test_copy_is_deep() -> None:
    state = CustomerState("c1")
    state.account("points").credit("a", 10, T0, None)
    clone = state.copy()
    clone.account("points").debit(5)
    assert state.points["points"].lots["a"].remaining == 10


operations = st.lists(
    st.tuples(
        st.sampled_from(["credit", "debit"]),
        st.integers(1, 500),
        st.one_of(st.none(), st.integers(0, 800)),  # expiry day (None: never)
        st.booleans(),  # debit: name a preferred lot
    ),
    max_size=40,
)


@given(operations)
def test_lots_hold_exactly_the_positive_balance(
    ops: list[tuple[str, int, int | None, bool]],
) -> None:
    acc = PointsAccount()
    expected = 0
    for n, (op, amount, expiry, prefer) in enumerate(ops):
        if op == "credit":
            acc.credit(f"lot-{n}", amount, day(n), None if expiry is None else day(expiry))
            expected += amount
        else:
            named = next(iter(acc.lots), None) if prefer else None
            acc.debit(amount, prefer=named)
            expected -= amount
        assert acc.balance == expected
        assert sum(lot.remaining for lot in acc.lots.values()) == max(acc.balance, 0)
        assert all(lot.remaining > 0 for lot in acc.lots.values())


@given(operations)
def test_unpreferred_debits_take_soonest_expiring_first(
    ops: list[tuple[str, int, int | None, bool]],
) -> None:
    acc = PointsAccount()
    for n, (op, amount, expiry, _) in enumerate(ops):
        if op == "credit":
            acc.credit(f"lot-{n:03d}", amount, day(n), None if expiry is None else day(expiry))
            continue
        before = {lot.lot_id: lot.remaining for lot in acc.lots.values()}
        order = [lot.lot_id for lot in sorted(acc.lots.values(), key=lambda lot: lot.sort_key())]
        acc.debit(amount)
        after = remaining(acc)
        # the touched lots form a prefix of the soonest-first order; at most one is partial
        touched = [lid for lid in order if after.get(lid, 0) != before[lid]]
        assert touched == order[: len(touched)]
        assert all(lid not in after for lid in touched[:-1])


def test_a_credit_naming_a_lot_adds_to_it_and_older_own_lots_stay() -> None:
    """Lifetime tier spend: each sale's credit names ``LIFETIME_LOT`` (one lot per customer,
    earned at its first credit); spend recorded before that (credits without a lot) keeps its
    own lots, and a refund debit naming either takes from the named one first."""
    events = [
        _event("old-1", "c1", Posting("tiers", Unit.SPEND, 500)),  # recorded by older code
        _event("new-1", "c1", Posting("tiers", Unit.SPEND, 300, lot=LIFETIME_LOT)),
        _event("new-2", "c1", Posting("tiers", Unit.SPEND, 200, lot=LIFETIME_LOT)),
    ]
    state = fold("c1", events)
    account = state.lotted[("tiers", Unit.SPEND)]
    assert account.balance == 1000
    assert remaining(account) == {lot_id("old-1", "tiers"): 500, LIFETIME_LOT: 500}
    assert account.lots[LIFETIME_LOT].earned_at == LIFETIME_EARNED  # fixed, order-free
    assert account.lots[LIFETIME_LOT].expires_at is None
    state.apply(_event("refund-new-2", "c1", Posting("tiers", Unit.SPEND, -150, lot=LIFETIME_LOT)))
    state.apply(
        _event(
            "refund-old-1", "c1", Posting("tiers", Unit.SPEND, -100, lot=lot_id("old-1", "tiers"))
        )
    )
    assert remaining(account) == {lot_id("old-1", "tiers"): 400, LIFETIME_LOT: 350}
    for n in range(50):
        state.apply(_event(f"more-{n}", "c1", Posting("tiers", Unit.SPEND, 10, lot=LIFETIME_LOT)))
    assert len(account.lots) == 2 and account.lots[LIFETIME_LOT].remaining == 850
