"""What every screen of the terminal has: a title, a message line, the status bar, the footer."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Input, Static

from drivers.payment_guard import carries_payment_card
from pos_loyalty.ui.status import StatusState, status_text
from pos_loyalty.ui.text import plain_error

if TYPE_CHECKING:
    from pos_loyalty.ui.app import TerminalApp


class Plain(Static):
    """A Static that shows text as it is: never parsed as markup (names, codes, SKUs typed
    by people must not be able to break the screen)."""

    def __init__(self, content: Any = "", **kwargs: Any) -> None:
        kwargs.setdefault("markup", False)
        super().__init__(content, **kwargs)


class StatusBar(Static):
    """Online/offline, events waiting, last sync, readers, till and store: always visible."""

    def on_mount(self) -> None:
        self.show(self.till.status_state)

    def show(self, state: StatusState) -> None:
        width = (self.size.width or self.app.size.width) - 2  # before layout: the screen's
        self.update(Text(status_text(state, max(width, 20)), no_wrap=True))

    def on_resize(self) -> None:
        self.show(self.till.status_state)

    @property
    def till(self) -> TerminalApp:
        return self.app  # type: ignore[return-value]


class KeyBar(Static):
    """The footer: every key of the screen with what it does, on one line.

    Used instead of Textual's ``Footer``, which recomposes its keys on every focus change and
    keeps a data-binding watcher per key ever shown: over a day of sales on long-lived
    screens that grows without bound. This is one Static, redrawn in place.
    """

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._changed)
        self._draw()

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _changed(self, screen: Screen[Any]) -> None:
        if self.is_attached and screen is self.screen:
            self._draw()

    def _draw(self) -> None:
        text = Text(no_wrap=True, overflow="ellipsis")
        seen: set[str] = set()
        for _node, binding, enabled, _tooltip in self.screen.active_bindings.values():
            if not binding.show or binding.action in seen:
                continue
            seen.add(binding.action)
            key = self.app.get_key_display(binding)
            text.append(f" {key} ", style="bold reverse" if enabled else "dim reverse")
            text.append(f" {binding.description}  ")
        self.update(text)


class Notice(Static):
    """The screen's one-line message: what just happened or what went wrong, in words."""

    def say(self, text: str, *, error: bool = False) -> None:
        self.set_class(error, "error")
        self.set_class(not error and bool(text), "info")
        self.update(Text(("! " if error else "") + text))


class TitleBar(Static):
    pass


class TillInput(Input):
    """An Input that takes Enter in order with the characters around it.

    Textual's own Enter binding runs only after the key has bubbled up to the app, by which
    time a wedge scanner (or a fast cashier) has typed more characters into the field; they
    would end up in the submitted value. Here Enter is handled in the field's own queue, and
    with ``clear_on_submit`` the field is emptied right there, so what follows the Enter
    starts the next entry.
    """

    def __init__(self, *args: Any, clear_on_submit: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clear_on_submit = clear_on_submit

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            value = self.value
            if self.clear_on_submit:
                self.value = ""
            self.post_message(self.Submitted(self, value, None))
            return
        await super()._on_key(event)


class TillScreen(Screen[Any]):
    """Base screen: ``body()`` yields the content between title and message line."""

    TITLE_TEXT = ""
    BINDINGS = [Binding("f1", "app.help", "Help")]

    @property
    def till(self) -> TerminalApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        shop = self.till.service.settings.shop_name or "Loyalty"
        yield TitleBar(f"{shop} · {self.TITLE_TEXT}", id="title")
        with Vertical(id="body"):
            yield from self.body()
        yield Notice(id="message")
        yield StatusBar(id="status")
        yield KeyBar(id="keys")

    def body(self) -> Iterable[Widget]:
        return ()

    def on_screen_resume(self) -> None:
        for bar in self.query(StatusBar):
            bar.show(self.till.status_state)
        self.resumed()

    def resumed(self) -> None:
        """The screen is on top again (or for the first time)."""

    def say(self, text: str, *, error: bool = False) -> None:
        self.query_one("#message", Notice).say(text, error=error)

    def say_error(self, exc: BaseException) -> None:
        self.say(plain_error(exc), error=True)

    def replace_with(self, screen: Screen[Any]) -> None:
        """Put ``screen`` in this screen's place (a result after a save), closing any dialog
        opened over this one meanwhile (help), so the result is what the cashier sees.

        Not awaited: called from this screen's own worker, which the switch ends (the stack
        changes at once; Textual finishes the change in the app's queue)."""
        if self not in self.app.screen_stack:  # not expected: shown all the same
            self.app.push_screen(screen)
            return
        while self.app.screen is not self:
            self.app.pop_screen()
        self.app.switch_screen(screen)

    def drop_card_data(self, *fields: Input) -> bool:
        """Empty every field among ``fields`` that holds payment-card data (a bank card swiped
        through a keyboard mag-stripe reader types wherever the focus is, and a card number
        can be typed by hand) and tell the cashier; True if any did. DESIGN invariant 10: the
        data is dropped, never shown, stored or logged."""
        found = False
        for field in fields:
            if carries_payment_card(field.value):
                field.value = ""
                found = True
        if found:
            self.till.refuse_payment_card()
        return found
