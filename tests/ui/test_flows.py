"""Pilot tests of each screen and flow of the cashier terminal."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

import pytest

from drivers.model import CardRead, ReaderState, ReaderStatus, Symbology
from pos_loyalty.domain.basket import Basket, BasketLine
from pos_loyalty.domain.cardcode import make_card_code
from pos_loyalty.service import SaleRequest, Service
from pos_loyalty.ui.app import TerminalApp
from pos_loyalty.ui.customer import CustomerScreen
from pos_loyalty.ui.dialogs import ConfirmScreen, HelpScreen
from pos_loyalty.ui.enrol import EnrolledScreen, EnrolScreen
from pos_loyalty.ui.refund import RefundDoneScreen, RefundScreen
from pos_loyalty.ui.sale import SaleScreen
from pos_loyalty.ui.scan import ScanScreen
from pos_loyalty.ui.summary import SummaryScreen

from .conftest import NOW, FakeSync, QueueFeed, screen_text, settle, type_text, wedge

pytestmark = pytest.mark.anyio

TRACK1 = "%B4111111111111111^DOE/JOHN^2512101000000000000?"

MakeApp = Callable[..., TerminalApp]


def balance(service: Service, code: str, program: str) -> int:
    return int(service.lookup(code)["balances"][program]["balance"])


async def test_scan_view_sale_summary(make_app: MakeApp, till: Service, codes: list[str]) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        assert isinstance(app.screen, ScanScreen)
        await type_text(pilot, codes[0])
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, CustomerScreen)
        text = screen_text(app)
        assert "Ada Demo" in text
        assert "Coffee card: ○○○○○○○○○ 0/9" in text
        assert "Points: 50 (worth 0.50)" in text
        assert "9 more stamps to a free coffee" in text
        assert codes[0] not in app.screen.query_one("#scan").value  # type: ignore[attr-defined]

        await pilot.press("f4")
        await settle(pilot)
        assert isinstance(app.screen, SaleScreen)
        await type_text(pilot, "espresso coffee 3.20")
        await pilot.press("enter")
        await type_text(pilot, "croissant bakery 2.50")  # not added yet: quoted as typed
        await settle(pilot)
        text = screen_text(app)
        assert "croissant (typing)" in text
        assert "TO PAY 5.70" in text
        assert "5 points (Points), 1 stamp (Coffee card)" in text

        await pilot.press("f9")
        await settle(pilot)
        assert isinstance(app.screen, SummaryScreen)
        text = screen_text(app)
        assert "TO PAY  5.70" in text
        assert "receipt R-0001" in text
        assert "Coffee card: ●○○○○○○○○ 1/9" in text
        assert "Points: 55 (worth 0.55)" in text

        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ScanScreen)
    assert balance(till, codes[0], "points") == 55
    assert balance(till, codes[0], "coffee-card") == 1


async def test_full_stamp_card_gives_a_free_coffee(
    make_app: MakeApp, till: Service, codes: list[str]
) -> None:
    customer = till.lookup(codes[1])["customer"]["id"]
    till.adjust(customer, "coffee-card", 9, "paper card carried over")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await type_text(pilot, codes[1])
        await pilot.press("enter")
        await settle(pilot)
        text = screen_text(app)
        assert "Free coffee is ready" in text
        assert "Free coffee x1" in text
        await pilot.press("f4")
        await settle(pilot)
        await type_text(pilot, "2x latte coffee 3.50")
        await pilot.press("enter")
        await settle(pilot)
        assert "latte (Free coffee)" in screen_text(app)
        await pilot.press("f9")
        await settle(pilot)
        text = screen_text(app)
        assert "TO PAY  3.50" in text
        assert "Saved   3.50  (Free coffee)" in text
        stamps = balance(till, codes[1], "coffee-card")
        assert 0 < stamps < 9  # the full card was spent
        assert f"{stamps}/9" in text  # the summary shows what the ledger holds


async def test_pay_with_points_and_refusal_in_plain_words(
    make_app: MakeApp, till: Service, codes: list[str]
) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await type_text(pilot, codes[0])
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("f4")
        await settle(pilot)
        await type_text(pilot, "5.00")
        await pilot.press("enter", "tab", "tab")
        await type_text(pilot, "900")  # more than the 50 points Ada has
        await settle(pilot)
        text = screen_text(app)
        assert "! " in text and "points" in text.lower()
        assert "Traceback" not in text
        await pilot.press("f9")
        await settle(pilot)
        assert isinstance(app.screen, SaleScreen)  # refused: nothing written
        for _ in range(3):
            await pilot.press("backspace")
        await type_text(pilot, "40")
        await settle(pilot)
        assert "TO PAY 4.60" in screen_text(app)
        await pilot.press("f9")
        await settle(pilot)
        assert isinstance(app.screen, SummaryScreen)
    assert balance(till, codes[0], "points") == 50 - 40 + 4


async def test_enrol_shows_qr_and_opens_the_customer(make_app: MakeApp, till: Service) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f2")
        await settle(pilot)
        assert isinstance(app.screen, EnrolScreen)
        await type_text(pilot, "Dora")
        await pilot.press("tab")
        await type_text(pilot, "+49 30 555")
        await pilot.press("tab", "tab", "tab", "tab", "space")  # marketing consent
        await pilot.press("f9")
        await settle(pilot)
        assert isinstance(app.screen, EnrolledScreen)
        code = app.screen.code
        text = screen_text(app)
        assert f"Dora is enrolled. Card {code}" in text
        assert "Welcome gift: 50 points" in text
        assert "█" in text  # the QR code, drawn in half blocks
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, CustomerScreen)
        assert "Dora" in screen_text(app)
    view = till.lookup(code)
    assert view["customer"]["name"] == "Dora"
    assert view["customer"]["consents"] == {"marketing": True}


async def test_enrol_refuses_bad_email_in_words(make_app: MakeApp) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f2")
        await settle(pilot)
        await pilot.press("tab", "tab")
        await type_text(pilot, "not-an-email")
        await pilot.press("f9")
        await settle(pilot)
        assert isinstance(app.screen, EnrolScreen)
        assert "! That email address does not look right" in screen_text(app)


async def test_refund_from_history(make_app: MakeApp, till: Service, codes: list[str]) -> None:
    basket = Basket((BasketLine("espresso", 2, 320, "coffee"),))
    till.commit(SaleRequest(basket, codes[0], "R-77", None, {"r": 77}))
    assert balance(till, codes[0], "points") == 56
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await type_text(pilot, codes[0])
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("f6")
        await settle(pilot)
        assert isinstance(app.screen, RefundScreen)
        assert "R-77" in screen_text(app)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        assert "F9 = Refund" in screen_text(app)
        await pilot.press("f9")  # yes is F9: a key no scanner sends
        await settle(pilot)
        assert isinstance(app.screen, RefundDoneScreen)
        text = screen_text(app)
        assert "HAND BACK  6.40" in text
        assert "Points: 50" in text
        # the same receipt again: refused in plain words
        await pilot.press("enter")
        await settle(pilot)
        await type_text(pilot, codes[0])
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("f6")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("f9")
        await settle(pilot)
        assert isinstance(app.screen, RefundScreen)
        assert "! " in screen_text(app)
    assert balance(till, codes[0], "points") == 50
    assert balance(till, codes[0], "coffee-card") == 0


async def test_unknown_card(make_app: MakeApp) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await type_text(pilot, make_card_code("PL", 999))
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ScanScreen)
        assert "! No loyalty card has the code PL" in screen_text(app)
        await type_text(pilot, "hello")
        await pilot.press("enter")
        await settle(pilot)
        assert "! No loyalty card has that code" in screen_text(app)


async def test_payment_card_swiped_on_the_keyboard(make_app: MakeApp) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        sub = app.bus.subscribe()
        await type_text(pilot, TRACK1)
        await pilot.press("enter")
        await settle(pilot)
        text = screen_text(app)
        assert "! That was a payment card. Its data was not kept." in text
        assert "4111" not in text and "DOE" not in text
        assert app.screen.query_one("#scan").value == ""  # type: ignore[attr-defined]
        seen = []  # periodic sync_status events may come first
        event = await sub.get(timeout=1)
        while event is not None and event.type != "card_rejected":
            seen.append(event)
            event = await sub.get(timeout=1)
        assert event is not None and event.type == "card_rejected", seen
        assert all("4111" not in str(e.data) for e in [*seen, event])


async def test_reader_read_opens_customer_and_payment_card_is_refused(
    make_app: MakeApp, codes: list[str]
) -> None:
    feed = QueueFeed(["counter"])
    app = make_app(readers=feed)
    async with app.run_test(size=(80, 24)) as pilot:
        feed.put(CardRead("", b"", Symbology.MSR_TRACK1, "counter", 0.0, rejected="payment_card"))
        await settle(pilot)
        assert "! That was a payment card" in screen_text(app)
        feed.put(CardRead(codes[2], codes[2].encode(), Symbology.CODE128, "counter", 1.0))
        await settle(pilot)
        assert isinstance(app.screen, CustomerScreen)
        assert "Cleo Demo" in screen_text(app)
        # another card while a customer is shown: that customer opens
        feed.put(CardRead(codes[0], codes[0].encode(), Symbology.CODE128, "counter", 2.0))
        await settle(pilot)
        assert "Ada Demo" in screen_text(app)
        # during a sale a read is not taken: said so in words
        await pilot.press("f4")
        await settle(pilot)
        feed.put(CardRead(codes[2], codes[2].encode(), Symbology.CODE128, "counter", 3.0))
        await settle(pilot)
        assert isinstance(app.screen, SaleScreen)
        assert "! A card was read. Finish or cancel this screen first" in screen_text(app)


async def test_reader_unplugged_and_back(make_app: MakeApp, codes: list[str]) -> None:
    feed = QueueFeed(["counter"])
    app = make_app(readers=feed)
    async with app.run_test(size=(120, 40)) as pilot:
        sub = app.bus.subscribe()
        await settle(pilot)
        assert "readers: keyboard ok, counter starting" in screen_text(app)
        feed.put(ReaderStatus("counter", ReaderState.CONNECTED, "ready", 0.0))
        await settle(pilot)
        assert "readers: keyboard ok, counter ok" in screen_text(app)
        feed.put(ReaderStatus("counter", ReaderState.DISCONNECTED, "USB cable pulled", 1.0))
        await settle(pilot)
        text = screen_text(app)
        assert "counter UNPLUGGED" in text
        assert "! Card reader counter is unplugged: USB cable pulled." in text
        # the keyboard still works
        await type_text(pilot, codes[1])
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, CustomerScreen)
        feed.put(ReaderStatus("counter", ReaderState.CONNECTED, "ready", 2.0))
        await settle(pilot)
        assert "counter ok" in screen_text(app)
        types = []
        while (event := await sub.get(timeout=0.2)) is not None:
            types.append((event.type, event.data.get("state")))
        assert ("reader_status", "disconnected") in types
        assert ("reader_status", "connected") in types


async def test_going_offline_and_back(make_app: MakeApp, codes: list[str]) -> None:
    sync = FakeSync()
    app = make_app(status=sync, status_interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        sub = app.bus.subscribe()
        await settle(pilot)
        text = screen_text(app)
        assert "OFFLINE (server unreachable)" in text
        assert "last sync never" in text
        sync.status = replace(sync.status, online=True, last_sync=NOW, message="")
        await settle(pilot)
        text = screen_text(app)
        assert "ONLINE | " in text and "last sync 09:15" in text
        # a sale while online, then offline again: the till keeps working
        sync.status = replace(
            sync.status, online=False, message="server unreachable", last_sync=NOW
        )
        await type_text(pilot, codes[0])
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("f4")
        await type_text(pilot, "espresso coffee 3.20")
        await pilot.press("f9")
        await settle(pilot)
        assert isinstance(app.screen, SummaryScreen)
        text = screen_text(app)
        assert "OFFLINE (server unreachable)" in text
        online = []
        while (event := await sub.get(timeout=0.2)) is not None:
            if event.type == "sync_status":
                online.append(event.data["online"])
        assert True in online and online[-1] is False


async def test_default_status_is_offline_sync_not_configured(make_app: MakeApp) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "OFFLINE (sync not configured)" in text
        assert "keyboard ok" in text


async def test_help_screen(make_app: MakeApp) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f1")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        assert "THE LOYALTY TERMINAL" in screen_text(app)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, ScanScreen)


async def test_unexpected_failure_is_shown_in_words(
    make_app: MakeApp, till: Service, codes: list[str], monkeypatch: object
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("disk on fire")

    till.lookup = broken  # type: ignore[method-assign,assignment]  # a failing stand-in
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await type_text(pilot, codes[0])
        await pilot.press("enter")
        await settle(pilot)
        text = screen_text(app)
        assert "! Something went wrong at the till; nothing was changed." in text
        assert "disk on fire" not in text and "Traceback" not in text
        assert isinstance(app.screen, ScanScreen)


async def test_blocked_card_cannot_sell(make_app: MakeApp, till: Service, codes: list[str]) -> None:
    till.block_card(codes[2], "lost")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await type_text(pilot, codes[2])
        await pilot.press("enter")
        await settle(pilot)
        assert "BLOCKED (lost)" in screen_text(app)
        await pilot.press("f4")
        await settle(pilot)
        assert isinstance(app.screen, CustomerScreen)
        assert "! This card is blocked" in screen_text(app)


def test_fixed_clock_is_used(till: Service) -> None:
    assert till.now() == NOW
    assert isinstance(NOW, datetime) and timedelta(0) == NOW - till.now()


async def test_a_damaged_ledger_is_told_once_and_stops_the_till(
    make_app: MakeApp, till: Service, codes: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The background file check (started by `pos-loyalty terminal`) finds a damaged page:
    the cashier reads it in words when the status refreshes, the log says it once (not at
    every refresh), and a scan is refused the same way."""
    from ..ledger.test_damage import damage

    path = till.ledger.path
    with sqlite3.connect(path) as conn:  # every page in the main file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    damage(path, "receipts")
    till.ledger.start_file_check().join(timeout=60)
    assert till.ledger.file_check.state == "damaged"

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        damaged = "! The till's records are damaged; nothing was changed. Call support."
        for _ in range(3):  # the first refresh can come before the screen is ready
            app.refresh_status()
            await settle(pilot)
        assert damaged in screen_text(app)
        await type_text(pilot, codes[0])
        await pilot.press("enter")
        await settle(pilot)
        assert damaged in screen_text(app)
        assert isinstance(app.screen, ScanScreen)
    told = [r for r in caplog.records if r.getMessage().startswith("ledger: ")]
    assert len(told) == 1 and told[0].exc_info is None
    assert not [r for r in caplog.records if r.exc_info is not None]


# --------------------------------------------------------------------------- saving in flight

F = TypeVar("F", bound=Callable[..., Any])


def slowed(fn: F, seconds: float = 0.5) -> F:
    """``fn`` behind a pause: the ledger busy (sync holding the lock) while the till waits."""

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds)
        return fn(*args, **kwargs)

    return cast(F, slow)


async def escape_while_saving(pilot: Any, app: Any, form: type, waiting: str, result: type) -> None:
    """F9 on ``form``, Esc while the slowed save runs: the form stays and says ``waiting``,
    then ``result`` is shown once the save ends."""
    await pilot.press("f9")
    await pilot.pause(0.05)
    await pilot.press("escape")
    await pilot.pause(0.05)
    assert isinstance(app.screen, form)
    assert waiting in screen_text(app)
    await pilot.pause(0.8)
    await settle(pilot)
    assert isinstance(app.screen, result), screen_text(app)


async def test_esc_while_saving_a_sale_waits_for_the_summary(
    make_app: MakeApp, till: Service, codes: list[str]
) -> None:
    till.commit = slowed(till.commit)  # type: ignore[method-assign]
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await type_text(pilot, codes[0])
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("f4")
        await type_text(pilot, "espresso coffee 3.20")
        await pilot.press("enter")
        await settle(pilot)
        await escape_while_saving(
            pilot, app, SaleScreen, "Saving the sale... please wait.", SummaryScreen
        )
    assert balance(till, codes[0], "coffee-card") == 1


async def test_esc_while_enrolling_waits_for_the_new_card(make_app: MakeApp, till: Service) -> None:
    till.enrol = slowed(till.enrol)  # type: ignore[method-assign]
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f2")
        await type_text(pilot, "Dora")
        await escape_while_saving(
            pilot, app, EnrolScreen, "Enrolling... please wait.", EnrolledScreen
        )
        assert "Dora is enrolled" in screen_text(app)


async def test_result_replaces_a_help_screen_opened_while_saving(
    make_app: MakeApp, till: Service
) -> None:
    till.enrol = slowed(till.enrol)  # type: ignore[method-assign]
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f2")
        await type_text(pilot, "Dora")
        await pilot.press("f9")
        await pilot.pause(0.05)
        await pilot.press("f1")
        await pilot.pause(0.8)
        await settle(pilot)
        assert isinstance(app.screen, EnrolledScreen)
        assert [type(s).__name__ for s in app.screen_stack] == ["ScanScreen", "EnrolledScreen"]


async def test_esc_while_refunding_waits_for_the_result(
    make_app: MakeApp, till: Service, codes: list[str]
) -> None:
    till.commit(SaleRequest(Basket((BasketLine("espresso", 1, 320, "coffee"),)), codes[0], "R-5"))
    till.refund = slowed(till.refund)  # type: ignore[method-assign]
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await type_text(pilot, codes[0])
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("f6")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await escape_while_saving(
            pilot, app, RefundScreen, "Refunding... please wait.", RefundDoneScreen
        )


async def test_a_scan_on_the_refund_question_does_not_answer_it(
    make_app: MakeApp, till: Service, codes: list[str]
) -> None:
    """A hands-free scanner reads the next customer's card while 'Refund the whole
    receipt?' is shown: its trailing Enter must not answer Yes."""
    till.commit(SaleRequest(Basket((BasketLine("espresso", 1, 320, "coffee"),)), codes[0], "R-1"))
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await type_text(pilot, codes[0])
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("f6")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await wedge(pilot, codes[1] + "\r")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, RefundScreen)
    history = till.customer(till.lookup(codes[0])["customer"]["id"])["history"]
    assert not any(h["kind"] == "refund.committed" for h in history)


async def test_enrol_typed_fast_keeps_each_entry_in_its_field(
    make_app: MakeApp, till: Service
) -> None:
    """Enter moves on, also when the next keys follow at once (a paste, a wedge)."""
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f2")
        await settle(pilot)
        await wedge(pilot, "Ada\r+49 30 1234567\rada@example.com\r")
        await settle(pilot)
        values = {k: app.screen.query_one(f"#{k}").value for k in ("name", "phone", "email")}  # type: ignore[attr-defined]
        assert values == {"name": "Ada", "phone": "+49 30 1234567", "email": "ada@example.com"}
        assert app.focused is not None and app.focused.id == "referral"
