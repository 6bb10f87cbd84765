"""Snapshots of the main screens at 80x24 and 120x40 (pytest-textual-snapshot).

Update after a deliberate change of the look: ``pytest tests/ui/test_snapshots.py
--snapshot-update``, then review the SVGs in ``__snapshots__``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from textual.pilot import Pilot

from pos_loyalty.domain.basket import Basket, BasketLine
from pos_loyalty.domain.cardcode import make_card_code
from pos_loyalty.service import SaleRequest, Service
from pos_loyalty.ui.app import TerminalApp

from .conftest import settle, type_text

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]
Steps = Callable[[Pilot[Any], list[str]], Awaitable[None]]


async def scan(pilot: Pilot[Any], codes: list[str]) -> None:
    await settle(pilot)


async def customer(pilot: Pilot[Any], codes: list[str]) -> None:
    await type_text(pilot, codes[0])
    await pilot.press("enter")
    await settle(pilot)


async def sale(pilot: Pilot[Any], codes: list[str]) -> None:
    await customer(pilot, codes)
    await pilot.press("f4")
    await type_text(pilot, "espresso coffee 3.20")
    await pilot.press("enter")
    await type_text(pilot, "2x croissant bakery 2.50")
    await settle(pilot)


async def summary(pilot: Pilot[Any], codes: list[str]) -> None:
    await sale(pilot, codes)
    await pilot.press("f9")
    await settle(pilot)


async def enrol(pilot: Pilot[Any], codes: list[str]) -> None:
    await pilot.press("f2")
    await type_text(pilot, "Dora")
    await pilot.press("tab")
    await type_text(pilot, "+49 30 555")
    await settle(pilot)


async def enrolled(pilot: Pilot[Any], codes: list[str]) -> None:
    await enrol(pilot, codes)
    await pilot.press("tab", "tab", "tab")
    await type_text(pilot, make_card_code("PL", 42))
    await pilot.press("f9")
    await settle(pilot)


async def refund(pilot: Pilot[Any], codes: list[str]) -> None:
    await customer(pilot, codes)
    await pilot.press("f6")
    await settle(pilot)


async def help_(pilot: Pilot[Any], codes: list[str]) -> None:
    await pilot.press("f1")
    await settle(pilot)


SCREENS = [
    pytest.param(scan, id="scan"),
    pytest.param(customer, id="customer"),
    pytest.param(sale, id="sale"),
    pytest.param(summary, id="summary"),
    pytest.param(enrol, id="enrol"),
    pytest.param(enrolled, id="enrolled"),
    pytest.param(refund, id="refund"),
    pytest.param(help_, id="help"),
]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("steps", SCREENS)
def test_screen(
    snap_compare: Any,
    make_app: Callable[..., TerminalApp],
    till: Service,
    codes: list[str],
    steps: Steps,
    size: tuple[int, int],
) -> None:
    basket = Basket((BasketLine("latte", 1, 350, "coffee"),))
    till.commit(SaleRequest(basket, codes[0], "R-0100", None, {"r": 100}))
    app = make_app()

    async def run_before(pilot: Pilot[Any]) -> None:
        await steps(pilot, codes)

    assert snap_compare(app, terminal_size=size, run_before=run_before)
