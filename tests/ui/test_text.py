"""What the cashier types, parsed; what the till shows, worded (no screen needed)."""

from __future__ import annotations

import pytest

from pos_loyalty.domain.basket import BasketLine
from pos_loyalty.ui.status import StatusState, status_text
from pos_loyalty.ui.text import EntryError, parse_line, parse_price, stamp_row

CATS = {"coffee", "bakery"}


@pytest.mark.parametrize(
    ("typed", "line"),
    [
        ("3.20", BasketLine("item", 1, 320, None)),
        ("3,2", BasketLine("item", 1, 320, None)),
        ("3", BasketLine("item", 1, 300, None)),
        ("coffee 3.20", BasketLine("coffee", 1, 320, "coffee")),
        ("Espresso 3.20", BasketLine("espresso", 1, 320, None)),
        ("espresso coffee 3.20", BasketLine("espresso", 1, 320, "coffee")),
        ("2x croissant bakery 2.50", BasketLine("croissant", 2, 250, "bakery")),
        ("croissant x3 2.50", BasketLine("croissant", 3, 250, None)),
    ],
)
def test_parse_line(typed: str, line: BasketLine) -> None:
    assert parse_line(typed, CATS) == line


@pytest.mark.parametrize("typed", ["", "espresso", "3.205", "a b c 1.00", "0x tea 1", "-1"])
def test_parse_line_refuses_in_words(typed: str) -> None:
    with pytest.raises(EntryError) as err:
        parse_line(typed, CATS)
    assert str(err.value)[0].isupper()


def test_price_is_never_a_float() -> None:
    assert parse_price("0.1") == 10 and isinstance(parse_price("19.99"), int)


def test_stamp_row() -> None:
    assert stamp_row(3, 9) == "●●●○○○○○○"
    assert stamp_row(9, 9) == "○○○○○○○○○"  # a full card: the reward shows separately
    assert stamp_row(-2, 9) == "○○○○○○○○○"


def test_status_line_drops_the_least_important_first() -> None:
    state = StatusState(
        events_waiting=12,
        readers=(("keyboard", "connected"), ("counter", "disconnected")),
        terminal_id="till-1",
        store_id="store-1",
        api="API :8765",
    )
    wide = status_text(state, 200)
    assert wide.startswith("OFFLINE (sync not configured) | 12 waiting | readers: keyboard ok")
    assert "last sync never" in wide
    assert "counter UNPLUGGED" in wide and "till-1@store-1" in wide
    narrow = status_text(state, 78)
    assert len(narrow) <= 78
    assert "OFFLINE" in narrow and "counter UNPLUGGED" in narrow and "12 waiting" in narrow


def test_wallet_balances_are_shown_with_what_they_allow() -> None:
    from pos_loyalty.domain.programs import ProgramSet
    from pos_loyalty.ui.text import balances_lines

    lines = balances_lines(
        ProgramSet("EUR", ()), {"cashback": {"kind": "wallet", "balance": 101, "payout": False}}
    )
    assert lines == ["cashback: 1.01 in the wallet (to spend here)"]
