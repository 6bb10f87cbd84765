"""Dialogs over any screen: the help screen and a yes/no question."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

HELP = """\
THE LOYALTY TERMINAL: every action is on a key, shown at the bottom.

Scan screen
  Scan a card (barcode, phone QR, stripe) or type its code, then Enter.
  F2  enrol a new customer        F3  sale without a loyalty card

Customer
  Shows stamps (filled = collected), points and their worth, rewards ready now,
  points expiring soon, what to tell the customer, and the last visits.
  F4 or Enter  start a sale       F6  refund a past receipt
  Scanning another card opens that customer.   Esc  done

Sale
  Type an item and Enter:  3.20  |  coffee 3.20  |  espresso coffee 3.20
                           2x croissant bakery 2.50   (price last)
  Tab to Codes (promo / coupon codes) and Points (points to pay with).
  The total follows what you type.  F8 remove the last item
  F9 confirm the sale (saved at once, even offline)   Esc cancel

Enrol
  Everything is optional. F9 enrols, then the new card shows as a QR code.

Status bar (bottom): ONLINE/OFFLINE, events waiting to sync, last sync,
card readers (UNPLUGGED when one is off; the keyboard always works), till@store.

Ctrl+Q quits.  Esc or F1 closes this help."""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "close", "Close help"),
        Binding("f1", "close", "Close help", show=False),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(Text(HELP), id="help-text")
        yield Footer()

    def action_close(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [
        Binding("enter", "yes", "Yes"),
        Binding("y", "yes", "Yes", show=False),
        Binding("escape", "no", "No"),
        Binding("n", "no", "No", show=False),
    ]

    def __init__(self, question: str, *, yes: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.yes_label = yes

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            yield Static(Text(self.question, style="bold"))
            yield Static(f"Enter = {self.yes_label}    Esc = No")
        yield Footer()

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_no(self) -> None:
        self.dismiss(False)
