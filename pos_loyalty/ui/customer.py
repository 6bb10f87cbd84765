"""The customer at a glance: stamps, points, rewards, nudges, last visits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widget import Widget
from textual.widgets import Input, Label

from pos_loyalty.ui.base import Plain, TillInput, TillScreen
from pos_loyalty.ui.text import (
    balances_lines,
    contact,
    first_name,
    history_text,
    nudges,
    when_text,
)


class CustomerScreen(TillScreen):
    TITLE_TEXT = "customer"
    AUTO_FOCUS = "#scan"
    BINDINGS = [
        Binding("f1", "app.help", "Help"),
        Binding("f4", "sale", "Sale"),
        Binding("f6", "refund", "Refund"),
        Binding("f2", "enrol", "New customer"),
        Binding("escape", "done", "Done"),
    ]

    def __init__(
        self, view: Mapping[str, Any] | None = None, history: Sequence[Mapping[str, Any]] = ()
    ) -> None:
        super().__init__()
        self.view: Mapping[str, Any] = view or {}
        self.history = history

    @property
    def code(self) -> str:
        return str(self.view["card"]["code"])

    @property
    def customer_id(self) -> str:
        return str(self.view["customer"]["id"])

    def body(self) -> Iterable[Widget]:
        yield Plain(id="name")
        yield Plain(id="contact")
        with VerticalScroll(id="card-body"):
            yield Plain(id="balances")
            yield Plain(id="rewards")
            yield Plain(id="expiring")
            yield Plain(id="nudges")
            yield Plain("Last visits:", classes="heading")
            yield Plain(id="history")
        with Horizontal(id="next-row"):
            yield Label("Next card: ")
            yield TillInput(
                placeholder="scan the next card",
                id="scan",
                select_on_focus=False,
                clear_on_submit=True,
            )

    def show(self, view: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> None:
        """Show another customer (the screen is reused: no rebuild, so it draws at once)."""
        self.view = view
        self.history = history
        if self.is_mounted:
            self._fill()

    def _fill(self) -> None:
        if not self.view:
            return
        programs = self.till.service.programs
        customer = self.view["customer"]
        card = self.view["card"]
        head = Text()
        head.append(first_name(customer), style="bold")
        head.append(f"   card {card['code']}")
        if card["status"] != "active":
            head.append(f"  BLOCKED ({card.get('reason') or 'no reason'})", style="bold reverse")
        self._set("#name", head)
        details = [contact(customer) or "no contact details", f"tier {self.view['tier'] or '-'}"]
        self._set("#contact", "  ·  ".join(details))
        self._set("#balances", "\n".join(balances_lines(programs, self.view["balances"])))
        rewards = self.view["rewards"]
        reward_text = (
            ", ".join(f"{r['label']} x{r['count']}" for r in rewards) if rewards else "none"
        )
        self._set("#rewards", f"Rewards now: {reward_text}")
        expiring = self.view.get("expiring_soon", [])
        soon = ", ".join(
            f"{e['points']} {e['program']} on {when_text(e['expires_at'])[:10]}"
            for e in expiring[:3]
        )
        self._set("#expiring", f"Expiring soon: {soon}" if soon else "")
        say = nudges(programs, self.view["balances"])
        self._set("#nudges", Text("Say: " + " ".join(say), style="italic"))
        lines = [history_text(h) for h in self.history] or ["(none yet)"]
        self._set("#history", "\n".join(lines))
        self.say(f"{first_name(customer)}: F4 sale, F6 refund, Esc when done.")

    def _set(self, selector: str, content: Any) -> None:
        widget = self.query_one(selector, Plain)
        widget.update(content)
        widget.display = bool(content)

    def on_mount(self) -> None:
        self._fill()

    def resumed(self) -> None:
        scan = self.query_one("#scan", Input)
        scan.value = ""
        scan.focus()
        self.call_after_refresh(self.till.customer_drawn)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value
        if text.strip():
            self.till.scan(text)
        else:
            self.action_sale()

    def action_sale(self) -> None:
        from pos_loyalty.ui.sale import SaleScreen

        if self.view["card"]["status"] != "active":
            self.say("This card is blocked: it cannot collect or spend.", error=True)
            return
        self.app.push_screen(SaleScreen(self.view))

    def action_refund(self) -> None:
        from pos_loyalty.ui.refund import RefundScreen

        self.app.push_screen(RefundScreen(self.view))

    def action_enrol(self) -> None:
        from pos_loyalty.ui.enrol import EnrolScreen

        self.app.push_screen(EnrolScreen())

    async def action_done(self) -> None:
        await self.till.go_home()
