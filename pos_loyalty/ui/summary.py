"""After a sale: what the cashier reads out (to pay, saved, earned, the new balances)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.widget import Widget

from pos_loyalty.domain.money import format_minor
from pos_loyalty.ui.base import Plain, TillScreen
from pos_loyalty.ui.text import balances_lines, earned_text, first_name, nudges


class SummaryScreen(TillScreen):
    TITLE_TEXT = "sale done"
    BINDINGS = [
        Binding("f1", "app.help", "Help"),
        Binding("enter", "next", "Next customer"),
        Binding("escape", "next", "Next customer", show=False),
    ]

    def __init__(self, result: Mapping[str, Any], view: Mapping[str, Any] | None) -> None:
        super().__init__()
        self.result = result
        self.view = view

    def body(self) -> Iterable[Widget]:
        r = self.result
        programs = self.till.service.programs
        who = first_name(self.view["customer"]) if self.view else "no loyalty card"
        yield Plain(f"Sale saved: receipt {r['receipt_id']} ({who})", id="receipt")
        big = Text()
        big.append(f"TO PAY  {format_minor(r['total'])}", style="bold reverse")
        yield Plain(big, id="to-pay")
        saved = format_minor(r["total_discount"])
        why = ", ".join(d["label"] for d in r["discounts"])
        yield Plain(f"Saved   {saved}" + (f"  ({why})" if why else ""), id="saved")
        if self.view is not None:
            yield Plain(f"Earned  {earned_text(programs, r['earned'])}", id="earned")
            if r["redeemed"]:
                used = ", ".join(f"{v} {k}" for k, v in r["redeemed"].items())
                yield Plain(f"Used    {used}", id="used")
            yield Plain("Now:", classes="heading")
            yield Plain("\n".join(balances_lines(programs, r["balances"])), id="balances")
            yield Plain(
                Text("Say: " + " ".join(nudges(programs, r["balances"])), style="italic"),
                id="nudges",
            )

    def on_mount(self) -> None:
        self.say("Read the summary to the customer, then press Enter for the next one.")

    async def action_next(self) -> None:
        await self.till.go_home()
