"""The terminal with serial readers configured, on real pty pairs (the readers' own stack:
``feed_from_settings`` -> ``drivers.stream``)."""

from __future__ import annotations

import asyncio
import os
import tty
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from textual.pilot import Pilot

from pos_loyalty.config import ReaderConfig, Settings
from pos_loyalty.service import Service
from pos_loyalty.ui.app import TerminalApp
from pos_loyalty.ui.customer import CustomerScreen
from pos_loyalty.ui.readers import feed_from_settings

from .conftest import screen_text, settle

pytestmark = pytest.mark.anyio


class Pty:
    """A fake serial device: a pty pair whose slave end is reached through ``link``."""

    def __init__(self, link: Path) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        link.symlink_to(os.ttyname(slave))
        os.close(slave)
        self.master = master

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        if self.master >= 0:
            os.close(self.master)
            self.master = -1


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Pty]:
    dev = Pty(tmp_path / "ttyScanner")
    yield dev
    dev.close()


def serial(name: str, url: str, **options: object) -> ReaderConfig:
    return ReaderConfig(name, "serial", url, MappingProxyType({"debounce": 0, **options}))


def terminal(till: Service, settings: Settings, *readers: ReaderConfig) -> TerminalApp:
    with_readers = replace(settings, readers=(settings.readers[0], *readers))
    app = TerminalApp(till, readers=feed_from_settings(with_readers))
    app.quote_delay = 0.01
    return app


async def wait_for(pilot: Pilot[Any], cond: Callable[[], bool], timeout: float = 15.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        await settle(pilot)
        if cond():
            return True
    return False


def reader_state(app: TerminalApp, name: str) -> str | None:
    return dict(app.status_state.readers).get(name)


async def test_bad_swipe_on_a_serial_msr_tells_the_cashier(
    till: Service, till_settings: Settings, device: Pty, tmp_path: Path, codes: list[str]
) -> None:
    app = terminal(till, till_settings, serial("msr", str(tmp_path / "ttyScanner")))
    async with app.run_test(size=(120, 30)) as pilot:
        assert await wait_for(pilot, lambda: reader_state(app, "msr") == "connected")
        device.write(b"%E?;E?\r")
        told = "! Card reader msr: the card could not be read: swipe it again."
        assert await wait_for(pilot, lambda: told in screen_text(app)), screen_text(app)
        device.write(codes[0].encode() + b"\r")
        assert await wait_for(pilot, lambda: isinstance(app.screen, CustomerScreen))


async def test_one_reader_with_bad_settings_leaves_the_others_working(
    till: Service, till_settings: Settings, device: Pty, tmp_path: Path, codes: list[str]
) -> None:
    """Settings not checked at load (built in code): the bad reader alone is in error."""
    good = serial("good", str(tmp_path / "ttyScanner"))
    bad = serial("bad", "/dev/ttyNOPE", framing="crr")
    app = terminal(till, till_settings, bad, good)
    async with app.run_test(size=(140, 30)) as pilot:
        assert await wait_for(pilot, lambda: reader_state(app, "good") == "connected")
        assert reader_state(app, "bad") == "error"
        assert reader_state(app, "readers") is None  # the stream as a whole did not stop
        device.write(codes[0].encode() + b"\r")
        assert await wait_for(pilot, lambda: isinstance(app.screen, CustomerScreen))
