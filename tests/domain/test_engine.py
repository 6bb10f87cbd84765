"""The rules engine, with exact numbers: rewards, paying with points, earning, errors."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pos_loyalty.domain.basket import Basket, BasketLine, Redemption
from pos_loyalty.domain.engine import Quote, quote
from pos_loyalty.domain.errors import DomainError
from pos_loyalty.domain.events import Posting, Unit
from pos_loyalty.domain.programs import (
    PointsProgram,
    ProgramSet,
    StampBasis,
    StampCardProgram,
    StampReward,
    WelcomeProgram,
)
from pos_loyalty.domain.state import CustomerState

AT = datetime(2026, 11, 22, 9, 15, tzinfo=UTC)

COFFEE = StampCardProgram(
    id="coffee-card",
    label="Coffee card",
    categories=frozenset({"coffee"}),
    required=9,
    reward_label="Free coffee",
)
POINTS = PointsProgram(
    id="points",
    label="Points",
    points_per_unit=1,
    unit=100,
    point_value=1,
    expiry_days=365,
    excluded_categories=frozenset({"gift-card"}),
)
WELCOME = WelcomeProgram(id="welcome", label="Welcome gift", points=50, points_program="points")
DEMO = ProgramSet("EUR", (COFFEE, POINTS, WELCOME))


def programs(*items: StampCardProgram | PointsProgram | WelcomeProgram) -> ProgramSet:
    return ProgramSet("EUR", tuple(items))


def customer(stamps: int = 0, points: int = 0, expires: datetime | None = None) -> CustomerState:
    state = CustomerState("c1")
    if stamps:
        state.stamps[COFFEE.id] = stamps
    if points:
        state.account(POINTS.id).credit("lot-1", points, AT - timedelta(days=1), expires)
    return state


def line(sku: str, category: str | None, price: int, qty: int = 1) -> BasketLine:
    return BasketLine(sku=sku, qty=qty, unit_price=price, category=category)


def basket(*lines: BasketLine, redeem: int = 0, codes: tuple[str, ...] = ()) -> Basket:
    return Basket(
        tuple(lines), codes=codes, redeem=(Redemption("points", redeem),) if redeem else ()
    )


def discounts_of(q: Quote) -> list[int]:
    return [ln.discount for ln in q.lines]


def postings_of(q: Quote) -> list[tuple[str, Unit, int]]:
    return [(p.program, p.unit, p.delta) for p in q.postings]


ESPRESSO = line("espresso", "coffee", 320)
LATTE = line("latte", "coffee", 450)
CROISSANT = line("croissant", "bakery", 250)


# --------------------------------------------------------------------------- stamp rewards


def test_a_full_card_makes_the_cheapest_qualifying_unit_free() -> None:
    q = quote(basket(LATTE, ESPRESSO, CROISSANT), customer(stamps=9), DEMO, AT)
    assert discounts_of(q) == [0, 320, 0]
    assert [(d.program, d.line, d.amount, d.label) for d in q.discounts] == [
        ("coffee-card", 1, 320, "Free coffee")
    ]
    assert (q.total_before, q.total_discount, q.total) == (1020, 320, 700)
    assert q.redeemed == {"coffee-card": 9}
    # the free espresso earns no stamp and no points: the latte earns 1 stamp, and points are
    # earned on 4.50 + 2.50 = 7.00 paid
    assert q.earned == {"points": 7, "coffee-card": 1}
    assert q.lines[1].stamps_earned == {}
    assert q.lines[1].earn_base == {"points": 0}
    assert postings_of(q) == [
        ("coffee-card", Unit.STAMPS, -9),
        ("points", Unit.POINTS, 7),
        ("coffee-card", Unit.STAMPS, 1),
    ]


def test_the_acceptance_tenth_coffee() -> None:
    q = quote(basket(ESPRESSO, CROISSANT), customer(stamps=9, points=77), DEMO, AT)
    assert q.total == 250
    assert q.earned == {"points": 2}
    assert q.redeemed == {"coffee-card": 9}


def test_one_reward_per_qualifying_unit_limited_by_rewards_available() -> None:
    # 20 stamps = 2 rewards; three espressos: two become free, the third earns a stamp
    q = quote(basket(line("espresso", "coffee", 320, qty=3)), customer(stamps=20), DEMO, AT)
    assert discounts_of(q) == [640]
    assert q.lines[0].free_units == 2
    assert q.redeemed == {"coffee-card": 18}
    assert q.earned == {"points": 3, "coffee-card": 1}
    # 27 stamps = 3 rewards but one coffee: one reward is used, two stay on the card
    q = quote(basket(ESPRESSO), customer(stamps=27), DEMO, AT)
    assert q.redeemed == {"coffee-card": 9}
    assert q.total == 0
    assert q.earned == {}


def test_rewards_go_to_the_cheapest_units_across_lines() -> None:
    q = quote(
        basket(LATTE, line("espresso", "coffee", 320, qty=1), line("ristretto", "coffee", 280)),
        customer(stamps=18),
        DEMO,
        AT,
    )
    assert discounts_of(q) == [0, 320, 280]
    assert q.earned == {"points": 4, "coffee-card": 1}


def test_no_reward_below_the_required_stamps() -> None:
    q = quote(basket(ESPRESSO), customer(stamps=8), DEMO, AT)
    assert q.total_discount == 0
    assert q.earned == {"points": 3, "coffee-card": 1}


def test_a_negative_stamp_count_gives_no_reward() -> None:
    q = quote(basket(ESPRESSO), customer(stamps=-3), DEMO, AT)
    assert q.total_discount == 0


def test_per_visit_card_gives_one_stamp_per_basket() -> None:
    visit = replace(COFFEE, per=StampBasis.VISIT)
    q = quote(
        basket(line("espresso", "coffee", 320, qty=2), LATTE, CROISSANT),
        CustomerState("c1"),
        programs(visit, POINTS),
        AT,
    )
    assert q.earned["coffee-card"] == 1
    assert [ln.stamps_earned for ln in q.lines] == [{"coffee-card": 1}, {}, {}]
    q = quote(basket(CROISSANT), CustomerState("c1"), programs(visit, POINTS), AT)
    assert "coffee-card" not in q.earned


def test_qualifying_by_sku() -> None:
    card = replace(COFFEE, categories=frozenset(), skus=frozenset({"cookie"}))
    q = quote(
        basket(line("cookie", "bakery", 150, qty=2), ESPRESSO),
        CustomerState("c1"),
        programs(card),
        AT,
    )
    assert q.earned == {"coffee-card": 2}


def test_fixed_discount_goes_to_the_dearest_qualifying_unit() -> None:
    card = replace(COFFEE, reward=StampReward.FIXED_DISCOUNT, reward_amount=100, required=5)
    state = CustomerState("c1", stamps={"coffee-card": 5})
    q = quote(basket(ESPRESSO, LATTE, CROISSANT), state, programs(card, POINTS), AT)
    assert discounts_of(q) == [0, 100, 0]
    assert q.redeemed == {"coffee-card": 5}
    # a discounted (not free) unit still earns its stamp; points on 3.20 + 3.50 + 2.50
    assert q.earned == {"points": 9, "coffee-card": 2}


def test_fixed_discount_is_capped_at_the_unit_price() -> None:
    card = replace(COFFEE, reward=StampReward.FIXED_DISCOUNT, reward_amount=500, required=5)
    state = CustomerState("c1", stamps={"coffee-card": 10})
    q = quote(basket(line("espresso", "coffee", 320, qty=3)), state, programs(card), AT)
    assert discounts_of(q) == [640]
    assert q.redeemed == {"coffee-card": 10}


def test_a_unit_made_free_by_a_fixed_discount_earns_no_stamp() -> None:
    card = replace(COFFEE, reward=StampReward.FIXED_DISCOUNT, reward_amount=500, required=5)
    state = CustomerState("c1", stamps={"coffee-card": 5})
    q = quote(basket(ESPRESSO), state, programs(card), AT)
    assert q.total == 0
    assert "coffee-card" not in q.earned


def test_zero_priced_units_are_not_rewarded() -> None:
    q = quote(basket(line("water", "coffee", 0), ESPRESSO), customer(stamps=9), DEMO, AT)
    assert discounts_of(q) == [0, 320]


# --------------------------------------------------------------------------- points earning


def test_one_truncation_per_receipt() -> None:
    # 1.50 + 1.50 = 3.00: 3 points, not 1 + 1
    q = quote(basket(BasketLine("a", 1, 150), BasketLine("b", 1, 150)), customer(), DEMO, AT)
    assert q.earned == {"points": 3}
    q = quote(basket(BasketLine("a", 1, 199)), customer(), DEMO, AT)
    assert q.earned == {"points": 1}
    q = quote(basket(BasketLine("a", 1, 99)), customer(), DEMO, AT)
    assert q.earned == {}
    assert q.postings == []


def test_excluded_categories_earn_nothing() -> None:
    gift = line("voucher", "gift-card", 5000)
    q = quote(basket(gift), customer(), DEMO, AT)
    assert q.earned == {}
    q = quote(basket(gift, line("cake", "bakery", 420)), customer(), DEMO, AT)
    assert q.earned == {"points": 4}
    assert q.lines[0].earn_base == {}


def test_earning_base_is_after_discounts_and_points_payment() -> None:
    # the acceptance basket: 10.00 paying 79 points totals 9.21 and earns 9 points
    q = quote(basket(line("cake", "bakery", 1000), redeem=79), customer(points=79), DEMO, AT)
    assert q.total == 921
    assert q.redeemed == {"points": 79}
    assert q.earned == {"points": 9}
    assert postings_of(q) == [("points", Unit.POINTS, -79), ("points", Unit.POINTS, 9)]


def test_earning_rate_and_unit() -> None:
    # Open Loyalty's example: 7 points per full 4.00 → 70 points on 40.00
    rich = replace(POINTS, points_per_unit=7, unit=400)
    q = quote(basket(BasketLine("a", 2, 2000)), CustomerState("c1"), programs(rich), AT)
    assert q.earned == {"points": 70}


def test_earned_lot_expires_after_expiry_days() -> None:
    q = quote(basket(line("cake", "bakery", 500)), customer(), DEMO, AT)
    (credit,) = q.postings
    assert credit == Posting("points", Unit.POINTS, 5, expires_at=AT + timedelta(days=365))
    forever = replace(POINTS, expiry_days=0)
    q = quote(basket(line("cake", "bakery", 500)), CustomerState("c1"), programs(forever), AT)
    assert q.postings[0].expires_at is None


# --------------------------------------------------------------------------- paying with points


def test_paying_with_points_is_capped_at_the_total_after_other_discounts() -> None:
    # free espresso first; then 2.50 left to pay, so only 250 of the 1000 points asked are used
    q = quote(basket(ESPRESSO, CROISSANT, redeem=1000), customer(stamps=9, points=1000), DEMO, AT)
    assert discounts_of(q) == [320, 250]
    assert q.total == 0
    assert q.redeemed == {"coffee-card": 9, "points": 250}
    assert q.earned == {}
    assert q.total_discount <= q.total_before


def test_points_are_split_over_lines_in_proportion() -> None:
    q = quote(
        basket(line("a", "bakery", 300), line("b", "bakery", 100), redeem=200),
        customer(points=500),
        DEMO,
        AT,
    )
    assert [ln.points_paid for ln in q.lines] == [{"points": 150}, {"points": 50}]
    assert discounts_of(q) == [150, 50]
    assert q.earned == {"points": 2}


def test_only_whole_points_fit_in_a_line() -> None:
    # a point worth 0.05: 0.12 left to pay takes 2 points (0.10), not 3
    pricey = replace(POINTS, point_value=5)
    state = CustomerState("c1")
    state.account("points").credit("lot", 100, AT, None)
    q = quote(
        Basket((BasketLine("a", 1, 12),), redeem=(Redemption("points", 100),)),
        state,
        programs(pricey),
        AT,
    )
    assert q.redeemed == {"points": 2}
    assert q.total == 2


def test_no_redemption_unless_asked() -> None:
    q = quote(basket(line("cake", "bakery", 500)), customer(points=1000), DEMO, AT)
    assert "points" not in q.redeemed


# --------------------------------------------------------------------------- anonymous and errors


def test_anonymous_basket_has_no_effects() -> None:
    q = quote(basket(ESPRESSO, CROISSANT), None, DEMO, AT)
    assert (q.total_before, q.total_discount, q.total) == (570, 0, 570)
    assert (q.discounts, q.earned, q.redeemed, q.postings) == ([], {}, {}, [])


def _error(b: Basket, state: CustomerState | None, progs: ProgramSet = DEMO) -> str:
    with pytest.raises(DomainError) as info:
        quote(b, state, progs, AT)
    assert info.value.message
    return info.value.code


def test_insufficient_points() -> None:
    assert _error(basket(CROISSANT, redeem=80), customer(points=79)) == "insufficient_points"
    assert _error(basket(CROISSANT, redeem=1), customer()) == "insufficient_points"


def test_expired_points_cannot_be_spent() -> None:
    state = customer(points=100, expires=AT - timedelta(seconds=1))
    assert _error(basket(CROISSANT, redeem=1), state) == "insufficient_points"


def test_unknown_program() -> None:
    b = Basket((CROISSANT,), redeem=(Redemption("miles", 10),))
    assert _error(b, customer(points=100)) == "unknown_program"


def test_not_redeemable() -> None:
    b = Basket((CROISSANT,), redeem=(Redemption("coffee-card", 9),))
    assert _error(b, customer(stamps=9)) == "not_redeemable"
    b = Basket((CROISSANT,), redeem=(Redemption("welcome", 1),))
    assert _error(b, customer(points=100)) == "not_redeemable"
    locked = replace(POINTS, redeemable=False)
    assert _error(basket(CROISSANT, redeem=1), customer(points=100), programs(locked)) == (
        "not_redeemable"
    )


def test_unknown_code() -> None:
    assert _error(basket(CROISSANT, codes=("SPRING10",)), customer()) == "unknown_code"
    assert _error(basket(CROISSANT, codes=("SPRING10",)), None) == "unknown_code"


def test_other_refusals() -> None:
    assert _error(basket(CROISSANT, redeem=10), None) == "card_required"
    twice = Basket((CROISSANT,), redeem=(Redemption("points", 1), Redemption("points", 1)))
    assert _error(twice, customer(points=100)) == "duplicate_redemption"
    with pytest.raises(DomainError) as refused:  # refused when the request is built
        Redemption("points", 0)
    assert refused.value.code == "invalid_points"
    for bad in (1.5, True, -1, 0):
        with pytest.raises(DomainError) as refused:
            BasketLine("a", bad, 100)  # type: ignore[arg-type]
        assert refused.value.code == "invalid_line"
        if bad != 0:
            with pytest.raises(DomainError):
                BasketLine("a", 1, bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- property

CATEGORIES = ["coffee", "bakery", "gift-card", None]

lines_strategy = st.lists(
    st.builds(
        BasketLine,
        sku=st.sampled_from(["a", "b", "c", "d"]),
        qty=st.integers(1, 4),
        unit_price=st.integers(0, 2000),
        category=st.sampled_from(CATEGORIES),
    ),
    min_size=1,
    max_size=6,
)


@given(lines_strategy, st.integers(0, 40), st.integers(0, 5000), st.data())
def test_quote_invariants(
    lines: list[BasketLine], stamps: int, points: int, data: st.DataObject
) -> None:
    state = customer(stamps=stamps, points=points)
    redeem = data.draw(st.integers(0, points)) if points else 0
    q = quote(basket(*lines, redeem=redeem), state, DEMO, AT)
    for ln in q.lines:
        assert 0 <= ln.discount <= ln.gross
        assert ln.free_units <= ln.qty
    assert 0 <= q.total_discount <= q.total_before
    assert q.total == q.total_before - q.total_discount
    assert sum(d.amount for d in q.discounts) == q.total_discount
    used = q.redeemed.get("points", 0)
    assert used <= redeem
    assert sum(sum(ln.points_paid.values()) for ln in q.lines) == used
    # earned on what was paid for non-excluded lines, one truncation
    base = sum(ln.total for ln in q.lines if ln.category != "gift-card")
    assert q.earned.get("points", 0) == base // 100
    # rewards: one per free unit, limited by the card
    free = sum(ln.free_units for ln in q.lines)
    assert free <= stamps // 9
    assert q.redeemed.get("coffee-card", 0) == 9 * free
    paid_coffee = sum(ln.qty - ln.free_units for ln in q.lines if ln.category == "coffee")
    assert q.earned.get("coffee-card", 0) == paid_coffee
