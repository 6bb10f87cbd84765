"""Readers from configuration -> one asyncio stream of ``CardRead | ReaderStatus``.

The rest of the system sees every reader through one async iterator::

    from drivers.stream import ReaderStream

    stream = ReaderStream.from_config(
        [("counter", "serial", "/dev/ttyACM0", {"framing": "cr"})],
        own_prefixes=("990012",),
    )
    async with stream:                   # start(): open, claim, enable every reader
        async for event in stream:       # CardRead or ReaderStatus, in arrival order
            ...
    # leaving the block (or ``await stream.stop()``) releases every device; the iterator
    # then ends.

A config entry is ``(name, kind, url, options)``, any object with those attributes (the
app's ``ReaderConfig``), or a plain mapping ``{"name", "kind", "url", ...}`` whose other keys
are options. Kind ``keyboard`` is the terminal's own keyboard input: it yields no reader here.
Other kinds: ``serial``, ``usb``, ``hidraw``, ``evdev``, ``webcam``; more can be added with
:func:`register_kind`. Device modules are imported only when a reader of their kind is
configured, so a till with one serial scanner never loads OpenCV or libusb.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from drivers.lifecycle import Reader
from drivers.model import CardRead, ReaderState, ReaderStatus
from drivers.options import check_option_names
from drivers.parse import ParseError

__all__ = [
    "KINDS",
    "ReaderFactory",
    "ReaderStream",
    "normalise_entry",
    "reader_from_config",
    "readers_from_config",
    "register_kind",
]

log = logging.getLogger(__name__)

Event = CardRead | ReaderStatus
ReaderFactory = Callable[[str, str | None, Mapping[str, object]], Reader]

_END = object()


def _serial(name: str, url: str | None, options: Mapping[str, object]) -> Reader:
    from drivers.serial_reader import SerialReader

    return SerialReader(name, url, options)


def _lazy(module: str, cls: str) -> ReaderFactory:
    def factory(name: str, url: str | None, options: Mapping[str, object]) -> Reader:
        reader_cls = getattr(importlib.import_module(module), cls)
        reader = reader_cls(name, url, options)
        assert isinstance(reader, Reader)
        return reader

    return factory


KINDS: dict[str, ReaderFactory | None] = {
    "keyboard": None,  # the terminal's own keyboard: read by the UI, not here
    "serial": _serial,
    "usb": _lazy("drivers.usb_reader", "UsbReader"),
    "hidraw": _lazy("drivers.hidraw_reader", "HidrawReader"),
    "evdev": _lazy("drivers.evdev_reader", "EvdevReader"),
    "webcam": lambda name, url, options: WebcamAdapter(name, url, options),
}


class WebcamAdapter(Reader):
    """A :class:`drivers.webcam.WebcamReader` behind the common lifecycle.

    Options: ``formats``, ``confirm``, ``rearm_frames``, ``rearm_seconds``, ``width``,
    ``height``, ``debounce`` (default 0: the webcam's own tracker already confirms codes),
    ``own_prefixes``. OpenCV is imported only when the reader is claimed.
    """

    kind = "webcam"

    def __init__(self, name: str, url: str | None, options: Mapping[str, object]) -> None:
        from drivers.options import opt_float, scan_options

        scan = scan_options(options)
        super().__init__(name, scan=scan, debounce=opt_float(options, "debounce", 0.0))
        self.source = url if url is not None else "0"
        self.options = dict(options)
        self._cam: Any = None

    def _start(self, timeout: float | None) -> None:  # float ok: seconds
        webcam = importlib.import_module("drivers.webcam")
        kwargs: dict[str, Any] = {
            key: self.options[key]
            for key in ("confirm", "rearm_frames", "rearm_seconds", "width", "height")
            if key in self.options
        }
        if self.scan.formats is not None:
            kwargs["formats"] = tuple(self.scan.formats)
        self._cam = webcam.WebcamReader(
            self.source,
            name=self.name,
            own_prefixes=self.scan.own_prefixes,
            on_event=self._on_event,
            **kwargs,
        )
        self._cam.start()

    def _on_event(self, event: object) -> None:
        if isinstance(event, CardRead):
            self.deliver(event)
        elif isinstance(event, ReaderStatus):
            self.health = event.state
            self._emit(event)

    def _stop(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            cam.stop()


def register_kind(kind: str, factory: ReaderFactory | None) -> None:
    """Add or replace a reader kind: ``factory(name, url, options) -> Reader``."""
    KINDS[kind] = factory


def normalise_entry(entry: object) -> tuple[str, str, str | None, dict[str, object]]:
    """A config entry in any accepted shape -> ``(name, kind, url, options)``."""
    if isinstance(entry, Mapping):
        rest = {str(k): v for k, v in entry.items() if k not in ("name", "kind", "url")}
        nested = rest.pop("options", None)
        options = dict(nested) if isinstance(nested, Mapping) else {}
        options.update(rest)
        name, kind, url = entry.get("name"), entry.get("kind"), entry.get("url")
    elif isinstance(entry, tuple | list) and len(entry) == 4:
        name, kind, url, opts = entry
        options = dict(opts or {})
    else:
        name = getattr(entry, "name", None)
        kind = getattr(entry, "kind", None)
        url = getattr(entry, "url", None)
        options = dict(getattr(entry, "options", None) or {})
    if not isinstance(name, str) or not name:
        raise ValueError("every reader needs a name")
    if not isinstance(kind, str):
        raise ValueError(f"reader {name}: kind is missing")
    if url is not None and not isinstance(url, str):
        url = str(url)
    return name, kind, url, options


def reader_from_config(
    name: str,
    kind: str,
    url: str | None,
    options: Mapping[str, object] | None = None,
    *,
    own_prefixes: Sequence[str] = (),
) -> Reader | None:
    """One reader (not yet opened), or None for kind ``keyboard``.

    Bad config: ValueError; :class:`drivers.options.OptionError` (a ValueError) when one
    setting is at fault, naming it -- an unknown setting (a typo) included.
    """
    if kind not in KINDS:
        raise ValueError(f"reader {name}: unknown kind {kind!r}; use one of {sorted(KINDS)}")
    opts = dict(options or {})
    check_option_names(kind, opts)
    factory = KINDS[kind]
    if factory is None:
        return None
    if own_prefixes and "own_prefixes" not in opts:
        opts["own_prefixes"] = list(own_prefixes)
    return factory(name, url, opts)


def readers_from_config(
    entries: Iterable[object], *, own_prefixes: Sequence[str] = ()
) -> list[Reader]:
    """Readers for every entry (keyboard entries skipped). Names must be unique."""
    readers: list[Reader] = []
    seen: set[str] = set()
    for entry in entries:
        name, kind, url, options = normalise_entry(entry)
        if name in seen:
            raise ValueError(f"two readers are called {name!r}; names must be unique")
        seen.add(name)
        reader = reader_from_config(name, kind, url, options, own_prefixes=own_prefixes)
        if reader is not None:
            readers.append(reader)
    return readers


class ReaderStream:
    """Many readers, one async stream of events (``CardRead`` and ``ReaderStatus``).

    ``include_errors=True`` also yields :class:`drivers.parse.ParseError` values (a scan that
    gave no card) so a UI can say "scan again".
    """

    def __init__(self, readers: Iterable[Reader], *, include_errors: bool = False) -> None:
        self.readers = list(readers)
        self.include_errors = include_errors
        self._queue: asyncio.Queue[object] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._stopped = False

    @classmethod
    def from_config(
        cls,
        entries: Iterable[object],
        *,
        own_prefixes: Sequence[str] = (),
        include_errors: bool = False,
    ) -> ReaderStream:
        return cls(
            readers_from_config(entries, own_prefixes=own_prefixes),
            include_errors=include_errors,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open, claim and enable every reader. A reader that fails reports an error status."""
        if self._started:
            return
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        for reader in self.readers:
            reader.set_sink(self._sink)
        await asyncio.to_thread(self._start_all)

    def _start_all(self) -> None:
        for reader in self.readers:
            try:
                reader.start()
            except Exception as exc:
                log.error("reader %s could not start: %s", reader.name, type(exc).__name__)
                reader.status(ReaderState.ERROR, f"could not start: {_reason(exc)}")

    async def stop(self) -> None:
        """Release and close every reader; the iterator ends after the events already queued."""
        if self._stopped:
            return
        self._stopped = True
        await asyncio.to_thread(self._stop_all)
        if self._queue is not None:
            self._queue.put_nowait(_END)

    def _stop_all(self) -> None:
        for reader in self.readers:
            try:
                reader.close()
            except Exception as exc:
                log.error("reader %s did not close cleanly: %s", reader.name, type(exc).__name__)

    async def __aenter__(self) -> ReaderStream:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- events ------------------------------------------------------------------------------

    def _sink(self, event: CardRead | ReaderStatus | ParseError) -> None:
        if isinstance(event, ParseError) and not self.include_errors:
            return
        loop, queue = self._loop, self._queue
        if loop is None or queue is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, event)

    async def get(self, timeout: float | None = None) -> Any:  # float ok: seconds
        """The next event, or None on timeout or once the stream has stopped."""
        if self._queue is None:
            raise RuntimeError("start the stream first")
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None
        if item is _END:
            self._queue.put_nowait(_END)  # later calls end too
            return None
        return item

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            item = await self.get()
            if item is None:
                return
            yield item


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
