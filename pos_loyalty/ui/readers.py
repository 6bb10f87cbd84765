"""The terminal's view of card readers: one async stream of ``CardRead | ReaderStatus``.

The keyboard (a wedge scanner typing into the scan field) is not a feed: it always works,
with or without one. A :class:`ReaderFeed` is whatever delivers the other readers;
:func:`feed_from_settings` builds one over ``drivers.stream.ReaderStream`` when the
configuration names readers other than the keyboard, else returns None (no readers).
:class:`QueueFeed` is a feed you push into (tests, benchmarks, other in-process sources).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from drivers.model import CardRead, ReaderState, ReaderStatus
from drivers.parse import ParseError

log = logging.getLogger("pos_loyalty.ui.readers")

# ParseError: a read that gave no card (a bad swipe...), so the cashier can be told.
ReaderEvent = CardRead | ReaderStatus | ParseError


class ReaderFeed(Protocol):
    """Readers other than the keyboard."""

    @property
    def names(self) -> Sequence[str]:
        """The configured readers, shown in the status bar until they report."""
        ...

    def stream(self) -> AsyncIterator[ReaderEvent]:
        """Reads and status changes, forever (until the app closes it)."""
        ...


class QueueFeed:
    """A feed whose events are put in by hand (thread-safe via :meth:`put_threadsafe`)."""

    def __init__(self, names: Sequence[str] = ()) -> None:
        self.names = tuple(names)
        self._queue: asyncio.Queue[ReaderEvent] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._early: list[ReaderEvent] = []

    async def stream(self) -> AsyncIterator[ReaderEvent]:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        for item in self._early:
            self._queue.put_nowait(item)
        self._early.clear()
        while True:
            yield await self._queue.get()

    def put(self, item: ReaderEvent) -> None:
        """From the app's loop (tests): queue ``item`` (kept until the stream starts)."""
        if self._queue is None:
            self._early.append(item)
        else:
            self._queue.put_nowait(item)

    def put_threadsafe(self, item: ReaderEvent) -> None:
        if self._loop is None or self._queue is None:
            self._early.append(item)
        else:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)


class DriverFeed:
    """Readers from ``drivers.stream.ReaderStream`` (opened when the stream is iterated,
    released when the app stops iterating it).

    Each reader is built on its own: one that cannot be built (a bad setting the file check
    did not catch, a driver missing) is reported as ``error`` and the others still run.
    """

    def __init__(self, entries: Sequence[Any], own_prefixes: Sequence[str] = ()) -> None:
        self.names = tuple(getattr(e, "name", "?") for e in entries)
        self._entries = list(entries)
        self._own_prefixes = tuple(own_prefixes)

    def _build(self) -> tuple[list[Any], list[ReaderStatus]]:
        from drivers.stream import normalise_entry, reader_from_config

        readers: list[Any] = []
        broken: list[ReaderStatus] = []
        for entry in self._entries:
            name = getattr(entry, "name", "?")
            try:
                name, kind, url, options = normalise_entry(entry)
                reader = reader_from_config(
                    name, kind, url, options, own_prefixes=self._own_prefixes
                )
            except Exception as exc:  # any failure: this reader only, the others still run
                log.error("reader %s cannot be used: %s", name, exc)
                problem = str(exc) if isinstance(exc, ValueError) else type(exc).__name__
                broken.append(
                    ReaderStatus(
                        name, ReaderState.ERROR, f"bad settings: {problem}", time.monotonic()
                    )
                )
                continue
            if reader is not None:
                readers.append(reader)
        return readers, broken

    async def stream(self) -> AsyncIterator[ReaderEvent]:
        from drivers.stream import ReaderStream

        readers, broken = self._build()
        for status in broken:
            yield status
        stream = ReaderStream(readers, include_errors=True)
        async with stream:
            async for item in stream:
                if isinstance(item, CardRead | ReaderStatus | ParseError):
                    yield item


def feed_from_settings(settings: Any) -> ReaderFeed | None:
    """A feed for the configured non-keyboard readers, or None when there are none (the
    terminal then runs with the keyboard only). A reader that cannot be built (unknown kind,
    missing driver) is logged and the terminal still starts."""
    entries = [r for r in getattr(settings, "readers", ()) if r.kind != "keyboard"]
    if not entries:
        return None
    try:
        import drivers.stream  # noqa: F401  (present: the reader stack is installed)
    except ImportError as exc:
        log.warning("card readers configured but drivers.stream is not available: %s", exc)
        return None
    return DriverFeed(entries)
