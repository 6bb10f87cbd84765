"""Money: integer minor units, and the one allocation rule (largest remainder)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pos_loyalty.domain.money import Money, allocate, format_minor, scale_floor

# --------------------------------------------------------------------------- Money


def test_money_is_integer_minor_units() -> None:
    assert Money(320, "EUR") + Money(250, "EUR") == Money(570, "EUR")
    assert Money(320, "EUR") - Money(400, "EUR") == Money(-80, "EUR")
    assert str(Money(570, "EUR")) == "5.70 EUR"


@pytest.mark.parametrize("bad", [3.2, True, "320", None])
def test_money_refuses_non_integers(bad: object) -> None:
    with pytest.raises(TypeError):
        Money(bad, "EUR")  # type: ignore[arg-type]


@pytest.mark.parametrize("currency", ["eur", "EURO", "E1R", ""])
def test_money_needs_an_iso_4217_code(currency: str) -> None:
    with pytest.raises(ValueError):
        Money(1, currency)


def test_money_refuses_to_mix_currencies() -> None:
    with pytest.raises(ValueError, match="cannot mix EUR and USD"):
        Money(1, "EUR") + Money(1, "USD")


@pytest.mark.parametrize(
    ("minor", "text"),
    [(0, "0.00"), (5, "0.05"), (320, "3.20"), (-5, "-0.05"), (-12345, "-123.45")],
)
def test_format_minor(minor: int, text: str) -> None:
    assert format_minor(minor) == text


def test_format_minor_without_decimals() -> None:
    assert format_minor(1234, decimals=0) == "1234"


def test_scale_floor_truncates_toward_zero() -> None:
    assert scale_floor(70, 1, 2) == 35
    assert scale_floor(7, 1, 3) == 2
    assert scale_floor(-7, 1, 3) == -2
    assert scale_floor(5, 1, 0) == 0


# --------------------------------------------------------------------------- allocate


def test_allocate_in_proportion() -> None:
    assert allocate(100, [1, 1, 2], caps=[100, 100, 100]) == [25, 25, 50]
    assert allocate(10, [300, 700]) == [3, 7]


def test_allocate_largest_remainder() -> None:
    # 10 over 3:3:4 → 3, 3, 4 exactly; 7 over 1:1:1 → 2.33 each, the first gets the extra.
    assert allocate(10, [30, 30, 40]) == [3, 3, 4]
    assert allocate(7, [10, 10, 10]) == [3, 2, 2]
    # remainders 0.6 / 0.4: the larger remainder wins even at a later index
    assert allocate(1, [2, 3]) == [0, 1]
    # 5 over 10:10:10:70 → 0.5, 0.5, 0.5, 3.5: two units left over, four equal remainders,
    # so the two earliest indices get them
    assert allocate(5, [10, 10, 10, 70]) == [1, 1, 0, 3]


def test_allocate_ties_go_to_the_earlier_index() -> None:
    assert allocate(1, [1, 1]) == [1, 0]
    assert allocate(2, [1, 1, 1]) == [1, 1, 0]
    assert allocate(1, [5, 5, 5, 5]) == [1, 0, 0, 0]


def test_allocate_respects_caps() -> None:
    # proportional would be 50/50, but the first line has room for 10 only
    assert allocate(100, [1, 1], caps=[10, 200]) == [10, 90]
    # caps default to the weights
    assert allocate(5, [2, 3]) == [2, 3]
    # zero weights, but room: the rest goes to lines with room, in order
    assert allocate(3, [0, 0], caps=[2, 5]) == [2, 1]


def test_allocate_zero_and_empty() -> None:
    assert allocate(0, [3, 4]) == [0, 0]
    assert allocate(0, []) == []


@pytest.mark.parametrize(
    ("total", "weights", "caps"),
    [(-1, [1, 1], None), (3, [1, 1], None), (11, [10, 10], [5, 5])],
)
def test_allocate_refuses_what_does_not_fit(
    total: int, weights: list[int], caps: list[int] | None
) -> None:
    with pytest.raises(ValueError, match="cannot allocate"):
        allocate(total, weights, caps)


@st.composite
def allocations(draw: st.DrawFn) -> tuple[int, list[int], list[int] | None]:
    weights = draw(st.lists(st.integers(0, 10_000), min_size=1, max_size=8))
    if draw(st.booleans()):
        caps = [draw(st.integers(0, 10_000)) for _ in weights]
    else:
        caps = None
    room = sum(weights if caps is None else caps)
    total = draw(st.integers(0, room))
    return total, weights, caps


@given(allocations())
def test_allocate_property(case: tuple[int, list[int], list[int] | None]) -> None:
    total, weights, caps = case
    limits = weights if caps is None else caps
    shares = allocate(total, weights, caps)
    assert len(shares) == len(weights)
    assert all(type(s) is int for s in shares)
    assert sum(shares) == total
    assert all(0 <= s <= cap for s, cap in zip(shares, limits, strict=True))
    weight_sum = sum(weights)
    if caps is None and weight_sum:
        # Uncapped: the floor of each exact share, plus one for the largest remainders (ties
        # to the earlier index) until the total is reached.
        floors = [total * w // weight_sum for w in weights]
        ranked = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % weight_sum), i))
        bumped = set(ranked[: total - sum(floors)])
        assert shares == [f + (1 if i in bumped else 0) for i, f in enumerate(floors)]
