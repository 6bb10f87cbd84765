"""The idle screen: scan (or type) a loyalty card."""

from __future__ import annotations

from collections.abc import Iterable

from textual.binding import Binding
from textual.containers import Center
from textual.widget import Widget
from textual.widgets import Input

from pos_loyalty.ui.base import Plain, TillInput, TillScreen


class ScanScreen(TillScreen):
    TITLE_TEXT = "scan a card"
    AUTO_FOCUS = "#scan"
    BINDINGS = [
        Binding("f1", "app.help", "Help"),
        Binding("f2", "enrol", "New customer"),
        Binding("f3", "anonymous_sale", "Sale without card"),
    ]

    def body(self) -> Iterable[Widget]:
        yield Plain("SCAN THE LOYALTY CARD", id="prompt")
        yield Plain(
            "or type the card code and press Enter (phone QR, barcode or stripe all work)",
            id="prompt-hint",
        )
        with Center():
            yield TillInput(
                placeholder="card code", id="scan", select_on_focus=False, clear_on_submit=True
            )

    def on_mount(self) -> None:
        self.query_one("#scan", Input).focus()

    def resumed(self) -> None:
        scan = self.query_one("#scan", Input)
        scan.value = ""
        scan.focus()
        self.say(self.till.notice)  # e.g. the demo card codes; empty clears the last message

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value  # never leave what was scanned on the screen
        if not text.strip():
            self.say("Scan a card, or press F2 to enrol a new customer.")
            return
        self.till.scan(text)

    def action_enrol(self) -> None:
        from pos_loyalty.ui.enrol import EnrolScreen

        self.app.push_screen(EnrolScreen())

    def action_anonymous_sale(self) -> None:
        from pos_loyalty.ui.sale import SaleScreen

        self.app.push_screen(SaleScreen(None))
