"""A sale: lines typed fast, codes, points to pay with; the quote follows every keystroke."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.binding import Binding
from textual.containers import Horizontal
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Input, Label

from drivers.payment_guard import carries_payment_card
from pos_loyalty.domain.basket import Basket, BasketLine, Redemption
from pos_loyalty.domain.errors import DomainError
from pos_loyalty.domain.money import format_minor
from pos_loyalty.service import SaleRequest
from pos_loyalty.ui.base import Plain, TillInput, TillScreen
from pos_loyalty.ui.text import (
    EntryError,
    earned_text,
    first_name,
    known_categories,
    parse_codes,
    parse_line,
    parse_points,
    sale_raw,
)


class SaleScreen(TillScreen):
    TITLE_TEXT = "sale"
    AUTO_FOCUS = "#item"
    BINDINGS = [
        Binding("f1", "app.help", "Help"),
        Binding("enter", "add_line", "Add item"),
        Binding("f8", "remove_line", "Remove last"),
        Binding("f9", "confirm", "Confirm sale"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, view: Mapping[str, Any] | None) -> None:
        super().__init__()
        self.view = view
        self.lines: list[BasketLine] = []
        self.quote: dict[str, Any] | None = None
        self.receipt_id: str | None = None
        self.committing = False
        self._timer: Timer | None = None
        # The payment-card refusal stays on screen until the cashier's next step (a fresh
        # quote clears other messages).
        self._keep_message = False

    @property
    def card(self) -> str | None:
        return None if self.view is None else str(self.view["card"]["code"])

    def body(self) -> Iterable[Widget]:
        if self.view is None:
            who = "Sale without a loyalty card (nothing is collected)"
        else:
            programs = self.till.service.programs
            bal = self.view["balances"]
            pts = [
                f"{getattr(programs.get(p), 'label', p)} {b.get('balance', 0)}"
                for p, b in bal.items()
                if b.get("kind") in ("points", "stamps")
            ]
            who = f"Sale for {first_name(self.view['customer'])}  ({', '.join(pts)})"
        yield Plain(who, id="who")
        with Horizontal(classes="field"):
            yield Label("Item    ")
            yield TillInput(
                placeholder="item and price, Enter adds: espresso coffee 3.20",
                id="item",
                clear_on_submit=True,
            )
        with Horizontal(classes="field"):
            yield Label("Codes   ")
            yield TillInput(placeholder="promo or coupon codes", id="codes")
        if self.view is not None and self._points_program() is not None:
            with Horizontal(classes="field"):
                yield Label("Points  ")
                yield TillInput(placeholder="points to pay with (0)", id="points", restrict=r"\d*")
        yield Plain(id="quote")
        yield Plain(id="totals")

    def on_mount(self) -> None:
        self.query_one("#item", Input).focus()
        self._show()

    def _points_program(self) -> str | None:
        for program in self.till.service.programs.points:
            if program.redeemable:
                return program.id
        return None

    # -- entry ----------------------------------------------------------------------------
    def _pending(self) -> BasketLine | None:
        text = self.query_one("#item", Input).value
        if not text.strip():
            return None
        return parse_line(text, known_categories(self.till.service.programs))

    def _basket(self, *, with_pending: bool) -> tuple[list[BasketLine], tuple[str, ...], int]:
        lines = list(self.lines)
        if with_pending:
            try:
                pending = self._pending()
            except EntryError:
                pending = None
            if pending is not None:
                lines.append(pending)
        codes = parse_codes(self.query_one("#codes", Input).value)
        points = 0
        if self.query("#points"):
            points = parse_points(self.query_one("#points", Input).value)
        return lines, codes, points

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id != "item":
            self.drop_card_data(event.input)
            self.query_one("#item", Input).focus()
            return
        text = event.value
        self._add(text)

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._schedule_quote()

    def action_add_line(self) -> None:
        item = self.query_one("#item", Input)
        if self.focused is not item:
            item.focus()
            return
        text = item.value
        item.value = ""
        self._add(text)

    def _add(self, text: str) -> None:
        """Add the line the cashier typed (``text``, already taken out of the field)."""
        item = self.query_one("#item", Input)
        self._keep_message = False
        if carries_payment_card(text):  # a bank card swiped into the item field: dropped
            self._keep_message = True
            self.till.refuse_payment_card()
            return
        if not text.strip():
            if self.lines:
                self.say("Press F9 to confirm the sale, or type another item.")
            else:
                self.say("Type an item and its price, e.g. espresso coffee 3.20", error=True)
            return
        try:
            line = parse_line(text, known_categories(self.till.service.programs))
        except EntryError as exc:
            item.value = text + item.value  # give it back to correct
            self.say(str(exc), error=True)
            return
        self.lines.append(line)
        self.say(f"Added {line.qty} x {line.sku} {format_minor(line.unit_price)}.")
        self._schedule_quote()

    def action_remove_line(self) -> None:
        self._keep_message = False
        if not self.lines:
            self.say("There is no item to remove.", error=True)
            return
        line = self.lines.pop()
        self.say(f"Removed {line.sku}.")
        self._schedule_quote()

    async def action_cancel(self) -> None:
        if self.committing:  # the sale is being written: leaving would hide its result
            self.say("Saving the sale... please wait.")
            return
        self.app.pop_screen()

    # -- quote ----------------------------------------------------------------------------
    def _schedule_quote(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(max(self.till.quote_delay, 0.001), self._start_quote)

    def _request(self, lines: list[BasketLine], codes: tuple[str, ...], points: int) -> Basket:
        program = self._points_program()
        redeem = (Redemption(program, points),) if points and program else ()
        return Basket(tuple(lines), codes, redeem)

    def _start_quote(self) -> None:
        if self._holds_card_data():
            return  # never sent anywhere; dropped at Enter or F9
        try:
            lines, codes, points = self._basket(with_pending=True)
        except EntryError as exc:
            self.say(str(exc), error=True)
            return
        if not lines:
            self.quote = None
            self._show()
            return
        request = SaleRequest(self._request(lines, codes, points), self.card)
        self.run_worker(
            self._quote(request, len(lines) > len(self.lines)),
            group="quote",
            exclusive=True,
            exit_on_error=False,
        )

    async def _quote(self, request: SaleRequest, typing: bool) -> None:
        try:
            quote = await self.till.call(self.till.service.quote, request)
        except Exception as exc:
            self.quote = None
            self._show()
            self.till.tell_error(exc)
            return
        self.quote = quote
        self._show(typing=typing)
        if not self.committing and not self._keep_message:
            self.say("")

    def _show(self, typing: bool = False) -> None:
        table = Table(box=None, expand=True, pad_edge=False, show_edge=False)
        table.add_column("#", width=2, justify="right")
        table.add_column("Item", ratio=3, no_wrap=True)
        table.add_column("Qty", justify="right", width=4)
        table.add_column("Price", justify="right", width=8)
        table.add_column("Off", justify="right", width=8)
        table.add_column("Total", justify="right", width=8)
        quote = self.quote
        labels: dict[int, str] = {}
        if quote:
            for d in quote["discounts"]:
                labels[d["line"]] = d["label"]
        if quote:
            for i, ln in enumerate(quote["lines"]):
                name = ln["sku"] + (f" ({labels[i]})" if i in labels else "")
                if typing and i == len(quote["lines"]) - 1:
                    name += " (typing)"
                table.add_row(
                    str(i + 1),
                    Text(name),
                    str(ln["qty"]),
                    format_minor(ln["unit_price"]),
                    "-" + format_minor(ln["discount"]) if ln["discount"] else "",
                    format_minor(ln["total"]),
                )
        else:
            for i, line in enumerate(self.lines):
                table.add_row(
                    str(i + 1), Text(line.sku), str(line.qty), format_minor(line.unit_price), "", ""
                )
        self.query_one("#quote", Plain).update(table)
        self.query_one("#totals", Plain).update(self._totals())

    def _totals(self) -> Text:
        quote = self.quote
        if not quote:
            return Text("No items yet." if not self.lines else "Working out the total...")
        programs = self.till.service.programs
        out = Text()
        out.append(f"Before {format_minor(quote['total_before'])}   ")
        out.append(f"Saved {format_minor(quote['total_discount'])}   ")
        out.append(f"TO PAY {format_minor(quote['total'])}", style="bold reverse")
        if self.view is not None:
            out.append(f"\nEarns: {earned_text(programs, quote['earned'])}")
            if quote["redeemed"]:
                spent = ", ".join(f"{v} {k}" for k, v in quote["redeemed"].items())
                out.append(f"   Uses: {spent}")
        return out

    def _fields(self) -> list[Input]:
        return [w for w in self.query(Input) if w.id in ("item", "codes", "points")]

    def drop_card_data(self, *fields: Input) -> bool:
        found = super().drop_card_data(*fields)
        self._keep_message = found
        return found

    def _holds_card_data(self) -> bool:
        return any(carries_payment_card(field.value) for field in self._fields())

    # -- commit ---------------------------------------------------------------------------
    def action_confirm(self) -> None:
        if self.committing:
            return
        if self.drop_card_data(*self._fields()):
            return
        try:
            if self._pending() is not None:
                self._take_pending()
            lines, codes, points = self._basket(with_pending=False)
        except EntryError as exc:
            self.say(str(exc), error=True)
            return
        if not lines:
            self.say("Add at least one item before confirming.", error=True)
            return
        if self.receipt_id is None:
            self.receipt_id = self.till.new_id("R")
        request = SaleRequest(
            self._request(lines, codes, points),
            self.card,
            self.receipt_id,
            None,
            sale_raw(self.card, lines, codes, points),
        )
        self.committing = True
        self.say("Saving the sale...")
        self.run_worker(self._commit(request), group="commit", exit_on_error=False)

    def _take_pending(self) -> None:
        line = self._pending()
        if line is not None:
            self.lines.append(line)
            self.query_one("#item", Input).value = ""

    async def _commit(self, request: SaleRequest) -> None:
        from pos_loyalty.ui.summary import SummaryScreen

        try:
            result = await self.till.call(self.till.service.commit, request)
        except Exception as exc:
            self.committing = False
            if isinstance(exc, DomainError):
                self.receipt_id = None  # refused, nothing written: the next try is new
            self.till.tell_error(exc)
            return
        self.replace_with(SummaryScreen(result, self.view))
