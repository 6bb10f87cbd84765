"""The cashier terminal: a Textual app over the till's :class:`~pos_loyalty.service.Service`.

``create_terminal_app(service, readers=..., status=..., bus=...)`` builds it; the CLI's
``pos-loyalty terminal`` runs it with the plugin API embedded. Ledger work always runs in a
worker thread (``asyncio.to_thread`` inside Textual workers) so the screen never freezes;
every refusal or failure is shown in words on the screen, never as a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from textual.app import App
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen

from drivers.model import CardRead, ReaderStatus, Symbology
from drivers.parse import ParseError, parse_scan
from drivers.payment_guard import carries_payment_card
from pos_loyalty.domain.ids import uuid7
from pos_loyalty.events import (
    EventBus,
    NoSync,
    SyncStatus,
    SyncStatusProvider,
    sync_status_event,
)
from pos_loyalty.service import Service
from pos_loyalty.ui.base import TillScreen
from pos_loyalty.ui.readers import ReaderFeed
from pos_loyalty.ui.status import StatusState
from pos_loyalty.ui.text import is_ledger_error, plain_error

if TYPE_CHECKING:
    from pos_loyalty.ui.customer import CustomerScreen

log = logging.getLogger("pos_loyalty.ui")

T = TypeVar("T")

PAYMENT_CARD_MESSAGE = (
    "That was a payment card. Its data was not kept. Please scan the loyalty card."
)


class TerminalApp(App[None]):
    """The till's loyalty terminal."""

    CSS_PATH = "terminal.tcss"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("f1", "help", "Help", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    status_state: reactive[StatusState] = reactive(StatusState)

    def __init__(
        self,
        service: Service,
        *,
        readers: ReaderFeed | None = None,
        status: SyncStatusProvider | None = None,
        bus: EventBus | None = None,
        api: str = "",
        status_interval: float = 2.0,  # float ok: seconds
        new_id: Callable[[str], str] | None = None,
    ) -> None:
        super().__init__()
        self.service = service
        self.readers = readers
        self.sync = status or NoSync()
        self.bus = bus or EventBus()
        self.status_interval = status_interval
        self.new_id = new_id or self._new_id
        self.quote_delay = 0.08  # float ok: seconds of typing pause before a sale is re-quoted
        self.notice = ""  # shown on the scan screen at start (e.g. the demo card codes)
        self.after_start: Callable[[], None] | None = None  # run once the screen is up
        self.ready_at: float | None = None  # monotonic time the scan screen was first drawn
        self.shown_at: float | None = None  # monotonic time the last customer view was drawn
        settings = service.settings
        self.title = settings.shop_name or "pos-loyalty"
        readers_shown = [("keyboard", "connected")]
        readers_shown += [(n, "waiting") for n in (readers.names if readers else ())]
        self.set_reactive(
            TerminalApp.status_state,
            StatusState(
                terminal_id=settings.terminal_id,
                store_id=settings.store_id,
                readers=tuple(readers_shown),
                api=api,
                sync_message=self.sync.sync_status().message,
            ),
        )
        self._last_published: tuple[Any, ...] | None = None
        self._ledger_trouble_logged = False

    # -- lifecycle ------------------------------------------------------------------------
    def get_default_screen(self) -> Screen[Any]:
        from pos_loyalty.ui.scan import ScanScreen

        return ScanScreen()

    def on_mount(self) -> None:
        self.set_interval(self.status_interval, self.refresh_status)
        self.refresh_status()
        if self.readers is not None:
            self.run_worker(self._pump_readers(), group="readers", exit_on_error=False)
        self.call_after_refresh(self._mark_ready)

    def _mark_ready(self) -> None:
        if self.ready_at is None:
            self.ready_at = time.monotonic()
            if self.after_start is not None:
                try:
                    self.after_start()
                except Exception as exc:
                    self.tell_error(exc)

    def _new_id(self, prefix: str) -> str:
        return f"{self.service.settings.terminal_id}-{prefix}{uuid7().replace('-', '')[:16]}"

    # -- ledger calls ---------------------------------------------------------------------
    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking ledger work off the UI thread."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    def tell(self, text: str, *, error: bool = False) -> bool:
        """Show ``text`` on the nearest till screen (under any dialog); False when there is
        none yet (at start-up)."""
        for screen in reversed(self.screen_stack):
            if isinstance(screen, TillScreen):
                screen.say(text, error=error)
                return True
        return False

    def tell_error(self, exc: BaseException) -> None:
        if is_ledger_error(exc):  # the file, not a fault here: the status refresh logs it
            pass
        elif not isinstance(exc, ValueError) and not hasattr(exc, "code"):
            log.error("terminal: %s", type(exc).__name__, exc_info=exc)
        self.tell(plain_error(exc), error=True)

    # -- scans ----------------------------------------------------------------------------
    def refuse_payment_card(self) -> None:
        """Payment-card data was read or typed and has been dropped: say so (never the data)."""
        self.tell(PAYMENT_CARD_MESSAGE, error=True)

    def scan(self, text: str, source: str = "keyboard") -> None:
        """A card code arrived (typed, wedge-scanned or from a reader).

        What the keyboard delivers (typing, a keyboard-wedge scanner, a keyboard mag-stripe
        reader) goes through the same parser as the serial and HID readers' bytes: an AIM
        identifier (``]Q1``...) is split off, a swipe (``%...?;...?``) gives the loyalty id of
        its good tracks, payment-card data is refused. Reads from readers come parsed.
        """
        from pos_loyalty.ui.customer import CustomerScreen
        from pos_loyalty.ui.scan import ScanScreen

        text = text.strip()
        if not text:
            return
        if source == "keyboard":
            parsed = parse_scan(
                text.encode("utf-8"),
                "keyboard",
                default_symbology=Symbology.KEYBOARD,
                at=time.monotonic(),
            )
            if isinstance(parsed, ParseError):
                self.tell(cashier_sentence(parsed.message), error=True)
                return
            self.bus.publish_read(parsed)
            if parsed.rejected:
                self.refuse_payment_card()
                return
            text = parsed.text
        if carries_payment_card(text):
            self.refuse_payment_card()
            return
        top = self.screen
        if not isinstance(top, ScanScreen | CustomerScreen):
            self.tell(
                "A card was read. Finish or cancel this screen first (Esc), then scan again.",
                error=True,
            )
            return
        self.tell("Looking up the card...")
        self.run_worker(
            self.open_customer(text), group="lookup", exclusive=True, exit_on_error=False
        )

    def _fetch_customer(self, code: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        view = self.service.lookup(code)
        history = self.service.customer(view["customer"]["id"], limit=5)["history"]
        return view, history

    async def open_customer(self, code: str) -> None:
        try:
            view, history = await self.call(self._fetch_customer, code)
        except Exception as exc:
            self.tell_error(exc)
            return
        screen = self.customer_screen
        screen.show(view, history)
        if self.screen is screen:
            self.call_after_refresh(self.customer_drawn)
            return
        await self.go_home()
        await self.push_screen(screen)

    @property
    def customer_screen(self) -> CustomerScreen:
        """The one customer screen, reused for every customer (it draws without a rebuild)."""
        from pos_loyalty.ui.customer import CustomerScreen

        if not self.is_screen_installed("customer"):
            self.install_screen(CustomerScreen(), "customer")
        screen = self.get_screen("customer")
        assert isinstance(screen, CustomerScreen)
        return screen

    def customer_drawn(self) -> None:
        self.shown_at = time.monotonic()

    async def go_home(self) -> None:
        """Back to the scan screen, closing whatever is open."""
        while len(self.screen_stack) > 1:
            await self.pop_screen()

    # -- readers --------------------------------------------------------------------------
    async def _pump_readers(self) -> None:
        assert self.readers is not None
        try:
            async for item in self.readers.stream():
                if isinstance(item, ReaderStatus):
                    self.reader_changed(item)
                elif isinstance(item, CardRead):
                    self.card_read(item)
                elif isinstance(item, ParseError):
                    self.read_failed(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("card readers stopped: %s", type(exc).__name__, exc_info=exc)
            self.status_state = self.status_state.with_reader("readers", "error")
            self.tell("The card readers stopped working. The keyboard still works.", error=True)

    def card_read(self, read: CardRead) -> None:
        self.bus.publish_read(read)
        if read.rejected or carries_payment_card(read.text):
            self.refuse_payment_card()
            return
        self.scan(read.text, source=read.source)

    def read_failed(self, error: ParseError) -> None:
        """A reader read something that gave no card (a bad swipe, a code too long...): the
        parser's sentence, which never holds scanned data."""
        self.tell(f"Card reader {error.source}: {error.message}.", error=True)

    def reader_changed(self, status: ReaderStatus) -> None:
        self.bus.publish_reader_status(status)
        self.status_state = self.status_state.with_reader(status.source, status.state.value)
        if status.state.value in ("disconnected", "error"):
            words = "is unplugged" if status.state.value == "disconnected" else "has a problem"
            detail = f": {status.message}" if status.message else ""
            self.tell(
                f"Card reader {status.source} {words}{detail}. The keyboard still works.",
                error=True,
            )
        elif status.state.value == "connected":
            self.tell(f"Card reader {status.source} is connected.")

    # -- status ---------------------------------------------------------------------------
    def refresh_status(self) -> None:
        self.run_worker(self._refresh_status(), group="status", exclusive=True, exit_on_error=False)

    def _status_snapshot(self) -> tuple[SyncStatus, int | None, int, BaseException | None]:
        try:
            sync = self.sync.sync_status()
        except Exception as exc:
            log.error("sync status provider failed: %s", type(exc).__name__, exc_info=exc)
            sync = SyncStatus(message="sync status unknown")
        ledger_trouble: BaseException | None = None
        try:
            health = self.service.health()
            waiting: int | None = int(health["events_waiting"])
        except Exception as exc:
            waiting = None
            if is_ledger_error(exc):  # the file (damaged, locked): said once, below
                ledger_trouble = exc
            else:
                log.error("health failed: %s", type(exc).__name__, exc_info=exc)
        # The program configuration version in use (0: the till's own file).
        return sync, waiting, self.service.programs_version, ledger_trouble

    async def _refresh_status(self) -> None:
        sync, waiting, programs_version, trouble = await self.call(self._status_snapshot)
        # A damaged ledger (the background file check, or a read that met the damage): the
        # cashier is told at every refresh while it lasts (a screen change clears messages,
        # and the till can do nothing else meanwhile); the log says it once.
        if trouble is not None:
            if not self._ledger_trouble_logged:
                self._ledger_trouble_logged = True
                log.error("ledger: %s", trouble)
            self.tell(plain_error(trouble), error=True)
        else:
            self._ledger_trouble_logged = False
        key = (sync.online, sync.configured, sync.last_sync, sync.message, waiting)
        if key != self._last_published:
            self._last_published = key
            self.bus.publish(*sync_status_event(sync, waiting))
        self.status_state = replace(
            self.status_state,
            online=sync.online,
            sync_configured=sync.configured,
            sync_message=sync.message,
            last_sync=sync.last_sync,
            events_waiting=waiting,
            programs_version=programs_version,
        )

    def watch_status_state(self, state: StatusState) -> None:
        from pos_loyalty.ui.base import StatusBar

        for screen in self.screen_stack:
            for bar in screen.query(StatusBar):
                bar.show(state)

    # -- actions --------------------------------------------------------------------------
    def action_help(self) -> None:
        from pos_loyalty.ui.dialogs import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())


def cashier_sentence(message: str) -> str:
    """``"the card could not be read: swipe it again"`` -> a sentence for the screen."""
    message = message.strip()
    if not message:
        return message
    return message[0].upper() + message[1:] + ("" if message.endswith(".") else ".")


def create_terminal_app(
    service: Service,
    *,
    readers: ReaderFeed | None = None,
    status: SyncStatusProvider | None = None,
    bus: EventBus | None = None,
    api: str = "",
    status_interval: float = 2.0,  # float ok: seconds
) -> TerminalApp:
    """The cashier terminal over ``service``.

    ``readers``: card readers besides the keyboard (None: keyboard only). ``status``: the sync
    status provider (default: offline, sync not configured). ``bus``: where card reads and
    status changes are published (the plugin API's ``/v1/events`` streams it). ``api``: a
    note for the status bar about the embedded plugin API.
    """
    return TerminalApp(
        service,
        readers=readers,
        status=status,
        bus=bus,
        api=api,
        status_interval=status_interval,
    )
