"""Refund a past receipt, chosen from the customer's history."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from pos_loyalty.domain.money import format_minor
from pos_loyalty.service import RefundRequest
from pos_loyalty.ui.base import Plain, TillScreen
from pos_loyalty.ui.text import balances_lines, first_name, history_text

SALE = "sale.committed"


class ReceiptList(OptionList):
    BINDINGS = [Binding("enter", "select", "Refund receipt")]


class RefundScreen(TillScreen):
    TITLE_TEXT = "refund"
    BINDINGS = [
        Binding("f1", "app.help", "Help"),
        Binding("enter", "choose", "Refund receipt"),
        Binding("escape", "cancel", "Back"),
    ]

    def __init__(self, view: Mapping[str, Any]) -> None:
        super().__init__()
        self.view = view
        self.working = False

    def body(self) -> Iterable[Widget]:
        yield Plain(
            f"Receipts of {first_name(self.view['customer'])}: choose one (arrows, Enter)",
            id="refund-hint",
        )
        yield ReceiptList(id="receipts")

    def on_mount(self) -> None:
        self.say("Loading the receipts...")
        self.run_worker(self._load(), group="refund-load", exit_on_error=False)

    async def _load(self) -> None:
        service = self.till.service
        try:
            page = await self.till.call(service.customer, self.view["customer"]["id"], limit=50)
        except Exception as exc:
            self.till.tell_error(exc)
            return
        options = self.query_one("#receipts", OptionList)
        sales = [h for h in page["history"] if h["kind"] == SALE and h.get("key")]
        for h in sales:
            options.add_option(Option(Text(history_text(h)), id=str(h["key"])))
        if sales:
            options.highlighted = 0
            options.focus()
            self.say("Choose the receipt to refund whole and press Enter.")
        else:
            self.say("This customer has no sales to refund in the recent history.")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id:
            self._ask(event.option.id)

    def action_choose(self) -> None:
        options = self.query_one("#receipts", OptionList)
        if options.highlighted is None:
            self.say("There is no receipt to choose.", error=True)
            return
        option = options.get_option_at_index(options.highlighted)
        if option.id:
            self._ask(option.id)

    def _ask(self, receipt_id: str) -> None:
        from pos_loyalty.ui.dialogs import ConfirmScreen

        if self.working:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.working = True
                self.say("Refunding...")
                self.run_worker(self._refund(receipt_id), group="refund", exit_on_error=False)

        self.app.push_screen(
            ConfirmScreen(f"Refund the whole receipt {receipt_id}?", yes="Refund"), answered
        )

    async def _refund(self, receipt_id: str) -> None:
        till = self.till
        refund_id = till.new_id("F")
        request = RefundRequest(
            refund_id, receipt_id, None, None, {"receipt_id": receipt_id, "full": True}
        )
        try:
            result = await till.call(till.service.refund, request)
        except Exception as exc:
            self.working = False
            till.tell_error(exc)
            return
        self.replace_with(RefundDoneScreen(result, self.view))

    def action_cancel(self) -> None:
        if self.working:  # the refund is being written: leaving would hide its result
            self.say("Refunding... please wait.")
            return
        self.app.pop_screen()


class RefundDoneScreen(TillScreen):
    TITLE_TEXT = "refund done"
    BINDINGS = [
        Binding("f1", "app.help", "Help"),
        Binding("enter", "next", "Next customer"),
        Binding("escape", "next", "Next customer", show=False),
    ]

    def __init__(self, result: Mapping[str, Any], view: Mapping[str, Any]) -> None:
        super().__init__()
        self.result = result
        self.view = view

    def body(self) -> Iterable[Widget]:
        r = self.result
        programs = self.till.service.programs
        yield Plain(f"Refund {r['refund_id']} of receipt {r['receipt_id']}", id="refund-id")
        yield Plain(f"HAND BACK  {format_minor(r['amount'])}", id="hand-back")
        for label, key in (("Taken back", "reversed"), ("Given back", "returned")):
            if r[key]:
                text = ", ".join(f"{v} {k}" for k, v in r[key].items())
                yield Plain(f"{label}: {text}", classes=key)
        if r["balances"]:
            yield Plain("Now:", classes="heading")
            yield Plain("\n".join(balances_lines(programs, r["balances"])), id="balances")

    def on_mount(self) -> None:
        self.say("Refund saved. Enter for the next customer.")

    async def action_next(self) -> None:
        await self.till.go_home()
