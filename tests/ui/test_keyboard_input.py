"""What a keyboard-wedge scanner or a keyboard mag-stripe reader types into the terminal:
AIM identifiers and swipes in the scan field, and payment-card data wherever the focus is
(DESIGN invariant 10: dropped, never shown, stored or logged)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pos_loyalty.bootstrap import ledger_path
from pos_loyalty.domain.errors import DomainError
from pos_loyalty.service import Service
from pos_loyalty.ui.app import PAYMENT_CARD_MESSAGE, TerminalApp
from pos_loyalty.ui.customer import CustomerScreen
from pos_loyalty.ui.enrol import EnrolledScreen, EnrolScreen
from pos_loyalty.ui.sale import SaleScreen
from pos_loyalty.ui.scan import ScanScreen

from .conftest import screen_text, settle, type_text, wedge

pytestmark = pytest.mark.anyio

MakeApp = Callable[..., TerminalApp]

PAN = "4111111111111111"
SWIPE = f"%B{PAN}^DOE/JOHN^2512101000000000000?;{PAN}=25121010000000000?"


def ledger_bytes(till: Service) -> bytes:
    """Every byte of the ledger file and its WAL."""
    path = ledger_path(till.settings)
    out = b""
    for suffix in ("", "-wal"):
        file = Path(str(path) + suffix)
        if file.exists():
            out += file.read_bytes()
    return out


def message(app: TerminalApp) -> str:
    return str(app.screen.query_one("#message").render())


# --------------------------------------------------------------------------- the scan field


@pytest.mark.parametrize("aim", ["]Q1", "]C0"])
async def test_wedge_scan_with_aim_identifier_opens_the_customer(
    make_app: MakeApp, codes: list[str], aim: str
) -> None:
    """docs/hardware.md recommends the AIM id on: a wedge then types ``]Q1PL...``."""
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await wedge(pilot, aim + codes[0] + "\r")
        await settle(pilot)
        assert isinstance(app.screen, CustomerScreen), screen_text(app)
        assert "Ada Demo" in screen_text(app)


async def test_keyboard_msr_swipe_uses_the_good_track(make_app: MakeApp, codes: list[str]) -> None:
    """A keyboard MSR types ``%E?;<track 2>?``: the unreadable track 1 is skipped."""
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await wedge(pilot, "%E?;" + codes[0][2:] + "?\r")
        await settle(pilot)
        assert isinstance(app.screen, CustomerScreen), screen_text(app)
        assert "Ada Demo" in screen_text(app)


async def test_keyboard_msr_bad_swipe_says_swipe_again(make_app: MakeApp) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await wedge(pilot, "%E?;E?\r")
        await settle(pilot)
        assert isinstance(app.screen, ScanScreen)
        assert "! The card could not be read: swipe it again." in screen_text(app)


# --------------------------------------------------------------------------- other fields


async def test_swipe_into_the_enrol_name_is_dropped(make_app: MakeApp, till: Service) -> None:
    """On the enrol screen the focus is on the name: a bank card swiped there is dropped at
    its Enter, and the enrolment that follows carries none of it."""
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("f2")
        await settle(pilot)
        await wedge(pilot, SWIPE + "\r")
        await settle(pilot)
        assert isinstance(app.screen, EnrolScreen)
        assert app.screen.query_one("#name").value == ""  # type: ignore[attr-defined]
        assert PAYMENT_CARD_MESSAGE in message(app)
        assert PAN not in screen_text(app) and "DOE" not in screen_text(app)
        await pilot.press("f9")
        await settle(pilot)
        assert isinstance(app.screen, EnrolledScreen)
    assert PAN.encode() not in ledger_bytes(till)


@pytest.mark.parametrize(
    ("tabs", "field", "typed"),
    [
        (1, "phone", "4111 1111 1111 1111"),
        (2, "email", SWIPE),
        (3, "referral", SWIPE),
        (4, "card", f";{PAN}=2512101?"),
    ],
)
async def test_card_data_in_an_enrol_field_is_refused_at_f9(
    make_app: MakeApp, till: Service, tabs: int, field: str, typed: str
) -> None:
    app = make_app()
    async with app.run_test(size=(200, 30)) as pilot:
        await pilot.press("f2")
        await settle(pilot)
        await type_text(pilot, "Dora")
        for _ in range(tabs):
            await pilot.press("tab")
        assert app.focused is not None and app.focused.id == field
        await type_text(pilot, typed)
        await pilot.press("f9")
        await settle(pilot)
        assert isinstance(app.screen, EnrolScreen)  # nothing enrolled
        assert app.screen.query_one(f"#{field}").value == ""  # type: ignore[attr-defined]
        assert app.screen.query_one("#name").value == "Dora"  # type: ignore[attr-defined]
        assert PAYMENT_CARD_MESSAGE in message(app)
        assert "4111" not in screen_text(app)
    assert PAN.encode() not in ledger_bytes(till).replace(b" ", b"")


async def test_enrol_refused_by_the_till_for_card_data_clears_the_form(
    make_app: MakeApp, till: Service
) -> None:
    """The service refuses payment-card data itself (code ``payment_card_rejected``), also in
    forms this screen's check lets through: the cashier is told, nothing typed stays."""
    real = till.enrol

    def refusing(*args: Any, **kwargs: Any) -> Any:
        raise DomainError("payment_card_rejected", "Payment card data is never stored.")

    till.enrol = refusing  # type: ignore[method-assign]
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("f2")
        await settle(pilot)
        await type_text(pilot, "Dora")
        await pilot.press("f9")
        await settle(pilot)
        assert isinstance(app.screen, EnrolScreen)
        assert app.screen.query_one("#name").value == ""  # type: ignore[attr-defined]
        assert PAYMENT_CARD_MESSAGE in message(app)
        till.enrol = real  # type: ignore[method-assign]
        await type_text(pilot, "Dora")
        await pilot.press("f9")  # not stuck in "Enrolling..."
        await settle(pilot)
        assert isinstance(app.screen, EnrolledScreen)


async def test_swipe_into_the_sale_item_field_is_dropped(
    make_app: MakeApp, till: Service, codes: list[str]
) -> None:
    """The customer swipes the bank card to pay while the sale is open."""
    app = make_app()
    async with app.run_test(size=(160, 30)) as pilot:
        await wedge(pilot, codes[0] + "\r")
        await settle(pilot)
        await pilot.press("f4")
        await settle(pilot)
        assert isinstance(app.screen, SaleScreen)
        await wedge(pilot, "espresso coffee 3.20\r")
        await settle(pilot)
        await wedge(pilot, SWIPE + "\r")
        await settle(pilot)
        shown = screen_text(app)
        assert PAN not in shown and "DOE" not in shown, shown
        assert app.screen.query_one("#item").value == ""  # type: ignore[attr-defined]
        assert PAYMENT_CARD_MESSAGE in message(app)
        assert [line.sku for line in app.screen.lines] == ["espresso"]
        # the sale goes on
        await pilot.press("f9")
        await settle(pilot)
        assert "Sale saved" in screen_text(app)
    assert PAN.encode() not in ledger_bytes(till)


async def test_card_number_in_the_sale_codes_is_refused_at_f9(
    make_app: MakeApp, codes: list[str]
) -> None:
    app = make_app()
    async with app.run_test(size=(160, 30)) as pilot:
        await wedge(pilot, codes[0] + "\r")
        await settle(pilot)
        await pilot.press("f4")
        await settle(pilot)
        await type_text(pilot, "espresso coffee 3.20")
        await pilot.press("tab")
        await type_text(pilot, PAN)
        await pilot.press("f9")
        await settle(pilot)
        assert isinstance(app.screen, SaleScreen)
        assert app.screen.query_one("#codes").value == ""  # type: ignore[attr-defined]
        assert PAYMENT_CARD_MESSAGE in message(app)
        assert PAN not in screen_text(app)


async def test_a_wrong_price_is_refused_without_repeating_the_typing(
    make_app: MakeApp, codes: list[str]
) -> None:
    app = make_app()
    async with app.run_test(size=(160, 30)) as pilot:
        await pilot.press("f3")
        await settle(pilot)
        await wedge(pilot, "espresso secretword\r")
        await settle(pilot)
        assert "! Type the price last, like 3.20" in message(app)
        assert "secretword" not in message(app)
