"""The terminal over the demo shop on a real ledger in tmp_path, with a fixed clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from textual import events
from textual.keys import _character_to_key
from textual.pilot import Pilot

from pos_loyalty.bootstrap import ledger_path
from pos_loyalty.config import Settings, load_settings
from pos_loyalty.demo import seed_demo
from pos_loyalty.events import EventBus, SyncStatus
from pos_loyalty.ledger.store import Ledger
from pos_loyalty.service import Service
from pos_loyalty.ui.app import TerminalApp
from pos_loyalty.ui.readers import QueueFeed

NOW = datetime(2026, 11, 22, 9, 15, tzinfo=UTC)


@pytest.fixture
def till_settings(tmp_path: Path) -> Settings:
    return load_settings(None, data_dir=tmp_path)


@pytest.fixture
def till(till_settings: Settings) -> Iterator[Service]:
    """The demo shop's service, demo customers enrolled, the clock stopped at NOW."""
    ledger = Ledger(ledger_path(till_settings), till_settings.terminal_id)
    service = Service(till_settings, ledger, clock=lambda: NOW)
    seed_demo(service)
    try:
        yield service
    finally:
        ledger.close()


@pytest.fixture
def codes(till: Service) -> list[str]:
    return seed_demo(till)


class FakeSync:
    """A sync status provider the test switches between online and offline."""

    def __init__(self) -> None:
        self.status = SyncStatus(online=False, configured=True, message="server unreachable")

    def sync_status(self) -> SyncStatus:
        return self.status


@pytest.fixture
def make_app(till: Service) -> Callable[..., TerminalApp]:
    def make(**kwargs: Any) -> TerminalApp:
        ids = count(1)
        kwargs.setdefault("bus", EventBus())
        app = TerminalApp(till, new_id=lambda prefix: f"{prefix}-{next(ids):04d}", **kwargs)
        app.quote_delay = 0.01
        return app

    return make


async def settle(pilot: Pilot[Any], rounds: int = 2) -> None:
    """Let timers fire and workers (ledger calls in threads) finish, then redraw."""
    for _ in range(rounds):
        await pilot.pause(0.03)
        busy = [w for w in pilot.app.workers if w.group != "readers"]  # readers never end
        await asyncio.gather(*(w.wait() for w in busy), return_exceptions=True)
    await pilot.pause()


def screen_text(app: TerminalApp) -> str:
    """What the terminal shows, as plain text lines."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def type_text(pilot: Pilot[Any], text: str) -> None:
    """Type ``text`` as a wedge scanner does: keys back to back, then wait once."""
    app = pilot.app
    assert app._driver is not None
    for ch in text:
        key = ch if ch.isalnum() else _character_to_key(ch)
        event = events.Key(key, ch)
        event.set_sender(app)
        app._driver.send_message(event)
    await pilot.pause()


async def wedge(pilot: Pilot[Any], text: str) -> None:
    """Like :func:`type_text`, with CR as the Enter key: what the terminal delivers for a
    keyboard-wedge scanner's CR suffix (or a paste of several lines)."""
    app = pilot.app
    assert app._driver is not None
    for ch in text:
        key = "enter" if ch == "\r" else ch if ch.isalnum() else _character_to_key(ch)
        event = events.Key(key, ch)
        event.set_sender(app)
        app._driver.send_message(event)
    await pilot.pause()


__all__ = ["FakeSync", "NOW", "QueueFeed", "screen_text", "settle", "type_text", "wedge"]
