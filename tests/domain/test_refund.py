"""Refunds reverse what the sale did, in proportion (DESIGN invariant 9)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pos_loyalty.domain.basket import Basket, BasketLine, Redemption
from pos_loyalty.domain.engine import LineResult, Quote, quote
from pos_loyalty.domain.errors import DomainError
from pos_loyalty.domain.events import Posting, Unit
from pos_loyalty.domain.ids import lot_id
from pos_loyalty.domain.programs import PointsProgram, ProgramSet, StampBasis, StampCardProgram
from pos_loyalty.domain.refund import (
    RefundRequestLine,
    RefundResult,
    reverse,
    units_to_refund,
)
from pos_loyalty.domain.state import CustomerState

SALE_AT = datetime(2026, 3, 1, 12, tzinfo=UTC)
REFUND_AT = SALE_AT + timedelta(days=3)
SALE_ID = "sale-event-1"

COFFEE = StampCardProgram(id="coffee-card", label="Coffee card", categories=frozenset({"coffee"}))
POINTS = PointsProgram(id="points", label="Points", excluded_categories=frozenset({"gift-card"}))
DEMO = ProgramSet("EUR", (COFFEE, POINTS))
# Open Loyalty's example: 70 points on a 40.00 basket (7 points per full 4.00)
RICH = ProgramSet("EUR", (replace(POINTS, points_per_unit=7, unit=400),))


def sale(
    *lines: BasketLine,
    programs: ProgramSet = DEMO,
    stamps: int = 0,
    points: int = 0,
    redeem: int = 0,
) -> Quote:
    state = CustomerState("c1")
    if stamps:
        state.stamps["coffee-card"] = stamps
    if points:
        state.account("points").credit("lot-0", points, SALE_AT, None)
    b = Basket(tuple(lines), redeem=(Redemption("points", redeem),) if redeem else ())
    return quote(b, state, programs, SALE_AT)


class Refunds:
    """Successive refunds of one sale, keeping the already-refunded units like the ledger."""

    def __init__(self, q: Quote, programs: ProgramSet = DEMO) -> None:
        # through JSON, as the service stores the sale's lines in its event
        self.lines = [LineResult.from_json(ln.index, ln.to_json()) for ln in q.lines]
        self.earned = dict(q.earned)
        self.programs = programs
        self.already: dict[int, int] = {}

    def refund(self, request: Sequence[RefundRequestLine] | None = None) -> RefundResult:
        units = units_to_refund(self.lines, self.already, request)
        result = reverse(
            sale_event_id=SALE_ID,
            lines=self.lines,
            earned=self.earned,
            already=self.already,
            units=units,
            programs=self.programs,
            at=REFUND_AT,
        )
        for i, n in units.items():
            self.already[i] = self.already.get(i, 0) + n
        return result

    def line(self, sku: str, qty: int = 1) -> RefundResult:
        return self.refund([RefundRequestLine(sku, qty)])


def total(results: Sequence[RefundResult], pick: str, program: str) -> int:
    return sum(getattr(r, pick).get(program, 0) for r in results)


def test_open_loyalty_two_lines_refund_one_takes_half() -> None:
    q = sale(BasketLine("shoes", 1, 2000), BasketLine("shirt", 1, 2000), programs=RICH)
    assert q.earned == {"points": 70}
    refunds = Refunds(q, RICH)
    first = refunds.line("shoes")
    assert first.reversed_points == {"points": 35}
    assert first.amount == 2000
    assert first.units == {0: 1}
    assert first.postings == [
        Posting("points", Unit.POINTS, -35, lot=lot_id(SALE_ID, "points")),
    ]
    second = refunds.line("shirt")
    assert second.reversed_points == {"points": 35}


def test_open_loyalty_one_line_of_two_units() -> None:
    refunds = Refunds(sale(BasketLine("shoes", 2, 2000), programs=RICH), RICH)
    assert refunds.line("shoes").reversed_points == {"points": 35}
    assert refunds.line("shoes").reversed_points == {"points": 35}


def test_cumulative_partial_refunds_reverse_exactly_the_total() -> None:
    # 3 × 3.50 = 10.50 earns 10 points: 1 unit back takes 3, then 3, then the last 4
    q = sale(BasketLine("cake", 3, 350, "bakery"))
    assert q.earned == {"points": 10}
    refunds = Refunds(q)
    parts = [refunds.line("cake") for _ in range(3)]
    assert [r.reversed_points["points"] for r in parts] == [3, 3, 4]
    assert [r.amount for r in parts] == [350, 350, 350]
    with pytest.raises(DomainError) as info:
        refunds.refund()
    assert info.value.code == "already_refunded"


def test_full_refund_reverses_everything() -> None:
    q = sale(
        BasketLine("espresso", 2, 320, "coffee"),
        BasketLine("cake", 1, 455, "bakery"),
        BasketLine("voucher", 1, 2000, "gift-card"),
        points=100,
        redeem=100,
    )
    assert q.redeemed == {"points": 100}
    refunds = Refunds(q)
    result = refunds.refund(None)
    assert result.units == {0: 2, 1: 1, 2: 1}
    assert result.amount == q.total
    assert result.reversed_points.get("points", 0) == q.earned.get("points", 0)
    assert result.returned_points == {"points": 100}
    assert result.reversed_stamps == {"coffee-card": 2}
    assert result.returned_stamps == {}


def test_points_spent_on_refunded_lines_are_given_back() -> None:
    # 200 points pay 150 on the 3.00 line and 50 on the 1.00 line; 2.00 paid earns 2 points
    q = sale(
        BasketLine("a", 1, 300, "bakery"),
        BasketLine("b", 1, 100, "bakery"),
        points=500,
        redeem=200,
    )
    assert [ln.points_paid for ln in q.lines] == [{"points": 150}, {"points": 50}]
    assert q.earned == {"points": 2}
    refunds = Refunds(q)
    first = refunds.line("a")
    assert first.amount == 150  # what was paid in money for it
    assert first.returned_points == {"points": 150}
    assert first.reversed_points == {"points": 1}  # 2 × 150 // 200
    (debit, credit) = first.postings
    assert debit == Posting("points", Unit.POINTS, -1, lot=lot_id(SALE_ID, "points"))
    # the points given back are a new lot, with a fresh expiry from the refund
    assert credit == Posting("points", Unit.POINTS, 150, expires_at=REFUND_AT + timedelta(days=365))
    second = refunds.line("b")
    assert second.returned_points == {"points": 50}
    assert second.reversed_points == {"points": 1}


def test_stamps_earned_come_off_and_a_refunded_free_coffee_returns_its_stamps() -> None:
    q = sale(
        BasketLine("espresso", 2, 320, "coffee"),
        BasketLine("latte", 1, 450, "coffee"),
        stamps=9,
    )
    # one espresso free (9 stamps); 1 espresso + 1 latte earn 2 stamps
    assert q.redeemed == {"coffee-card": 9}
    assert q.earned == {"points": 7, "coffee-card": 2}
    refunds = Refunds(q)
    latte = refunds.line("latte")
    assert latte.reversed_stamps == {"coffee-card": 1}
    assert latte.returned_stamps == {}
    one = refunds.line("espresso")  # half the line: half its earned stamp, half its reward
    assert one.reversed_stamps == {}  # 1 × 1 // 2 = 0 so far
    assert one.returned_stamps == {"coffee-card": 4}  # 9 × 1 // 2
    two = refunds.line("espresso")
    assert two.reversed_stamps == {"coffee-card": 1}
    assert two.returned_stamps == {"coffee-card": 5}


def test_refund_by_sku_takes_units_in_receipt_order() -> None:
    q = sale(BasketLine("cake", 1, 300, "bakery"), BasketLine("cake", 2, 300, "bakery"))
    refunds = Refunds(q)
    assert refunds.line("cake", 2).units == {0: 1, 1: 1}
    assert refunds.line("cake", 1).units == {1: 1}


@pytest.mark.parametrize(
    ("request_lines", "code"),
    [
        ([RefundRequestLine("cake", 3)], "refund_exceeds_sale"),
        ([RefundRequestLine("cake", 2), RefundRequestLine("cake", 1)], "refund_exceeds_sale"),
        ([RefundRequestLine("pie", 1)], "unknown_line"),
        ([RefundRequestLine("cake", 0)], "invalid_quantity"),
    ],
)
def test_refusals(request_lines: list[RefundRequestLine], code: str) -> None:
    refunds = Refunds(sale(BasketLine("cake", 2, 300, "bakery")))
    with pytest.raises(DomainError) as info:
        refunds.refund(request_lines)
    assert info.value.code == code
    assert info.value.message


def test_refund_exceeding_what_is_left_is_refused() -> None:
    refunds = Refunds(sale(BasketLine("cake", 2, 300, "bakery")))
    refunds.line("cake", 1)
    with pytest.raises(DomainError) as info:
        refunds.line("cake", 2)
    assert info.value.code == "refund_exceeds_sale"
    assert "Only 1 more" in info.value.message


def test_a_refund_of_a_sale_that_earned_nothing_posts_nothing() -> None:
    refunds = Refunds(sale(BasketLine("voucher", 1, 5000, "gift-card")))
    result = refunds.refund()
    assert result.amount == 5000
    assert result.postings == []


# --------------------------------------------------------------------------- property


@st.composite
def sales_and_refund_plans(draw: st.DrawFn) -> tuple[Quote, list[Mapping[int, int]]]:
    lines = draw(
        st.lists(
            st.builds(
                BasketLine,
                sku=st.sampled_from(["a", "b", "c"]),
                qty=st.integers(1, 5),
                unit_price=st.integers(0, 3000),
                category=st.sampled_from(["coffee", "bakery", "gift-card"]),
            ),
            min_size=1,
            max_size=5,
        )
    )
    stamps = draw(st.integers(0, 30))
    points = draw(st.integers(0, 3000))
    redeem = draw(st.integers(0, points)) if points else 0
    q = sale(*lines, stamps=stamps, points=points, redeem=redeem)
    # split every line's units into a few refunds
    plans: list[dict[int, int]] = [{} for _ in range(draw(st.integers(1, 4)))]
    for ln in q.lines:
        for _ in range(ln.qty):
            plan = plans[draw(st.integers(0, len(plans) - 1))]
            plan[ln.index] = plan.get(ln.index, 0) + 1
    return q, [p for p in plans if p]


@given(sales_and_refund_plans())
def test_refunds_in_pieces_reverse_exactly_what_the_sale_did(
    case: tuple[Quote, list[Mapping[int, int]]],
) -> None:
    q, plans = case
    lines = [LineResult.from_json(ln.index, ln.to_json()) for ln in q.lines]
    already: dict[int, int] = {}
    results = []
    for units in plans:
        results.append(
            reverse(
                sale_event_id=SALE_ID,
                lines=lines,
                earned=q.earned,
                already=already,
                units=units,
                programs=DEMO,
                at=REFUND_AT,
            )
        )
        for i, n in units.items():
            already[i] = already.get(i, 0) + n
    for r in results:
        assert all(v > 0 for d in (r.reversed_points, r.returned_points) for v in d.values())
        assert r.amount >= 0
    assert sum(r.amount for r in results) == q.total
    assert total(results, "reversed_points", "points") == q.earned.get("points", 0)
    assert total(results, "reversed_stamps", "coffee-card") == q.earned.get("coffee-card", 0)
    assert total(results, "returned_points", "points") == q.redeemed.get("points", 0)
    assert total(results, "returned_stamps", "coffee-card") == q.redeemed.get("coffee-card", 0)
    # and the postings undo the sale's postings exactly
    sale_net: dict[tuple[str, Unit], int] = {}
    refund_net: dict[tuple[str, Unit], int] = {}
    for p in q.postings:
        sale_net[(p.program, p.unit)] = sale_net.get((p.program, p.unit), 0) + p.delta
    for r in results:
        for p in r.postings:
            refund_net[(p.program, p.unit)] = refund_net.get((p.program, p.unit), 0) + p.delta
    for key in sale_net.keys() | refund_net.keys():
        assert sale_net.get(key, 0) + refund_net.get(key, 0) == 0


VISITS = ProgramSet(
    "EUR",
    (
        StampCardProgram(
            id="visits", label="Tea visits", categories=frozenset({"tea"}), per=StampBasis.VISIT
        ),
    ),
)


def test_a_visit_stamp_an_earlier_refund_took_back_is_not_taken_again() -> None:
    """A sale partly refunded by a release that took the visit stamp with line 0: refunding
    the rest takes nothing more (it would take the stamp a second time)."""
    q = sale(
        BasketLine("green", 1, 250, "tea"), BasketLine("black", 1, 250, "tea"), programs=VISITS
    )
    lines = [LineResult.from_json(ln.index, ln.to_json()) for ln in q.lines]

    def last_line(reversed_before: dict[str, int] | None) -> RefundResult:
        return reverse(
            sale_event_id=SALE_ID,
            lines=lines,
            earned=dict(q.earned),
            already={0: 1},
            units={1: 1},
            programs=VISITS,
            at=REFUND_AT,
            stamps_reversed=reversed_before,
        )

    assert last_line(None).reversed_stamps == {"visits": 1}  # the stamp goes with the last
    assert last_line({"visits": 1}).reversed_stamps == {}  # already gone with line 0
