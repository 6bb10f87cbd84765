"""Dialogs over any screen: the help screen and a yes/no question."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from pos_loyalty.ui.base import KeyBar

HELP = """\
THE LOYALTY TERMINAL - every action is on a key, shown at the bottom.

SCAN    Scan a card (barcode, phone QR, stripe) or type its code + Enter.
        F2 enrol a new customer    F3 sale without a loyalty card

CUSTOMER  Stamps (filled = collected), points and their worth, rewards
        ready now, points expiring soon, what to say, the last visits.
        F4 or Enter: sale    F6 refund a receipt    Esc done
        Scanning another card opens that customer.

SALE    Type an item, then Enter (the price always last):
          3.20    coffee 3.20    espresso coffee 3.20    2x croissant 2.50
        Tab: promo/coupon codes, then points to pay with.
        The total follows your typing.   F8 remove last item
        F9 confirm (saved at once, online or offline)   Esc cancel

ENROL   All optional. F9 enrols; the new card shows as a QR code.

STATUS  ONLINE/OFFLINE, events waiting to sync, last sync, till@store,
        readers (UNPLUGGED when one is off; the keyboard always works).

Ctrl+Q quits.   Esc or F1 closes this help."""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "close", "Close help"),
        Binding("f1", "close", "Close help", show=False),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(Text(HELP), id="help-text")
        yield KeyBar(id="keys")

    def action_close(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question. Yes is F9, a key no scanner sends: a keyboard-wedge scanner ends
    every scan with Enter, and a card scanned while the question is shown must not answer
    it (nor may a letter inside a code)."""

    BINDINGS = [
        Binding("f9", "yes", "Yes"),
        Binding("escape", "no", "No"),
    ]

    def __init__(self, question: str, *, yes: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.yes_label = yes

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            yield Static(Text(self.question, style="bold"))
            yield Static(f"F9 = {self.yes_label}    Esc = No")
        yield KeyBar(id="keys")

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_no(self) -> None:
        self.dismiss(False)
