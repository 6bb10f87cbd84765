"""The reader lifecycle, in the spirit of UnifiedPOS Scanner / MSR devices.

``open`` -> ``claim`` -> ``enable`` ... ``disable`` -> ``release`` -> ``close``:

* ``open``: the reader is configured; nothing touches the device yet.
* ``claim``: exclusive access -- the port is opened, the kernel driver detached, the input
  device grabbed -- and the device is read in the background. Subclasses do this in
  :meth:`Reader._start` / :meth:`Reader._stop`.
* ``enable``: reads are delivered. While disabled, the device is still drained but every read
  is dropped (UnifiedPOS ``DeviceEnabled = false``).

Events go to one *sink*, a callable taking a ``CardRead`` or ``ReaderStatus`` (and, when the
sink wants them, ``ParseError``). It is called from the reader's own thread; the async stream
(:mod:`drivers.stream`) hands events over to its event loop.

Subclasses call :meth:`Reader.deliver_data` with the bytes of one scan (framing removed), or
:meth:`Reader.deliver` with a ready ``CardRead`` (the webcam path), and :meth:`Reader.status`
when the device's health changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import Enum
from typing import Any

from drivers.debounce import Debouncer
from drivers.model import CardRead, ReaderState, ReaderStatus
from drivers.parse import ParseError, ScanOptions, parse_with

__all__ = ["DeviceState", "Reader", "ReaderError", "Sink", "ThreadedReader"]

log = logging.getLogger(__name__)

Sink = Callable[[CardRead | ReaderStatus | ParseError], None]


class DeviceState(str, Enum):
    CLOSED = "closed"
    OPENED = "opened"
    CLAIMED = "claimed"
    ENABLED = "enabled"


class ReaderError(RuntimeError):
    """A lifecycle call out of order (e.g. ``enable`` before ``claim``)."""


def _drop(_event: CardRead | ReaderStatus | ParseError) -> None:
    return None


class Reader:
    """Base class of every reader. Thread-safe lifecycle; subclasses implement the device.

    Args:
      name: the reader's configured name (``CardRead.source``).
      scan: parse settings (own card prefixes, formats, MSR layouts...).
      debounce: seconds within which the same code is one read (0: off).
      sink: where events go (can be set later with :meth:`set_sink`).
    """

    kind = "reader"

    def __init__(
        self,
        name: str,
        *,
        scan: ScanOptions | None = None,
        debounce: float = 1.0,  # float ok: seconds
        sink: Sink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.scan = scan or ScanOptions()
        self.debouncer = Debouncer(debounce)
        self.clock = clock
        self._sink: Sink = sink or _drop
        self._lock = threading.RLock()
        self._state = DeviceState.CLOSED
        self.health: ReaderState | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def state(self) -> DeviceState:
        return self._state

    @property
    def enabled(self) -> bool:
        return self._state is DeviceState.ENABLED

    def set_sink(self, sink: Sink) -> None:
        self._sink = sink

    def open(self) -> None:
        with self._lock:
            if self._state is not DeviceState.CLOSED:
                raise ReaderError(f"reader {self.name} is already open")
            self._open()
            self._state = DeviceState.OPENED

    def claim(self, timeout: float | None = None) -> None:  # float ok: seconds
        """Take the device and start reading it (reads are dropped until :meth:`enable`)."""
        with self._lock:
            if self._state is DeviceState.CLOSED:
                raise ReaderError(f"reader {self.name} must be opened before it is claimed")
            if self._state is not DeviceState.OPENED:
                return  # already claimed
            self._start(timeout)
            self._state = DeviceState.CLAIMED

    def enable(self) -> None:
        with self._lock:
            if self._state is DeviceState.ENABLED:
                return
            if self._state is not DeviceState.CLAIMED:
                raise ReaderError(f"reader {self.name} must be claimed before it is enabled")
            self.debouncer.reset()
            self._state = DeviceState.ENABLED

    def disable(self) -> None:
        with self._lock:
            if self._state is DeviceState.ENABLED:
                self._state = DeviceState.CLAIMED

    def release(self) -> None:
        with self._lock:
            if self._state in (DeviceState.CLOSED, DeviceState.OPENED):
                return
            self._state = DeviceState.OPENED
        self._stop()  # outside the lock: the reading thread may be delivering right now

    def close(self) -> None:
        self.release()
        with self._lock:
            if self._state is DeviceState.OPENED:
                self._close()
            self._state = DeviceState.CLOSED

    def start(self) -> None:
        """open + claim + enable."""
        if self._state is DeviceState.CLOSED:
            self.open()
        self.claim()
        self.enable()

    # -- for subclasses ----------------------------------------------------------------------

    def _open(self) -> None:
        """Check the configuration (no device access)."""

    def _start(self, timeout: float | None) -> None:  # float ok: seconds
        """Acquire the device and start reading it in the background."""

    def _stop(self) -> None:
        """Stop reading and give the device back (detached drivers re-attached...)."""

    def _close(self) -> None:
        """Free whatever ``_open`` took."""

    def deliver_data(self, data: bytes, *, aim: str | None = None) -> None:
        """Parse one scan's bytes and deliver the result (if enabled)."""
        if not self.enabled:
            return
        result = parse_with(self.scan, data, self.name, aim=aim, at=self.clock())
        if isinstance(result, ParseError):
            log.info("reader %s: %s", self.name, result.code)
            self._emit(result)
        else:
            self.deliver(result)

    def deliver(self, read: CardRead) -> None:
        """Deliver a read: dropped unless enabled, and when it repeats inside the window."""
        if not self.enabled or not self.debouncer.accept(read):
            return
        self._emit(read)

    def status(self, state: ReaderState, message: str) -> None:
        """Report a change of health (connected, disconnected, reconnecting, error)."""
        if state is self.health and state is not ReaderState.ERROR:
            return
        self.health = state
        log.info("reader %s: %s (%s)", self.name, state.value, message)
        self._emit(ReaderStatus(self.name, state, message, self.clock()))

    def _emit(self, event: CardRead | ReaderStatus | ParseError) -> None:
        try:
            self._sink(event)
        except Exception:  # a broken consumer must not kill the reading thread
            log.exception("reader %s: the event consumer failed", self.name)


class ThreadedReader(Reader):
    """A reader with a background thread running :meth:`run` until :attr:`stopping` is set."""

    def __init__(
        self,
        name: str,
        *,
        scan: ScanOptions | None = None,
        debounce: float = 1.0,  # float ok: seconds
        sink: Sink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name, scan=scan, debounce=debounce, sink=sink, clock=clock)
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def _start(self, timeout: float | None) -> None:  # float ok: seconds
        self.stopping.clear()
        self._thread = threading.Thread(target=self._main, name=f"reader-{self.name}", daemon=True)
        self._thread.start()

    def _stop(self) -> None:
        self.stopping.set()
        self._wake()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _wake(self) -> None:
        """Make a blocked :meth:`run` return soon (subclasses: cancel a blocking read)."""

    def reconnect_loop(
        self,
        connect: Callable[[], Any],
        pump: Callable[[Any], None],
        disconnect: Callable[[Any], None],
        *,
        initial: float,  # float ok: seconds
        maximum: float,  # float ok: seconds
    ) -> None:
        """Open the device, read it until it goes away, close it; retry with doubling
        back-off (``initial`` up to ``maximum`` seconds) until stopped. ``connect`` and
        ``pump`` signal a missing or lost device with ``OSError``."""
        delay = initial
        while not self.stopping.is_set():
            try:
                handle = connect()
            except OSError as exc:
                self.status(ReaderState.RECONNECTING, f"waiting for the device ({exc.strerror})")
                self.stopping.wait(delay)
                delay = min(delay * 2, maximum)
                continue
            delay = initial
            self.status(ReaderState.CONNECTED, "connected")
            try:
                pump(handle)
            except OSError as exc:
                if not self.stopping.is_set():
                    self.status(ReaderState.DISCONNECTED, f"device lost ({exc.strerror})")
            finally:
                disconnect(handle)
        if self.health is ReaderState.CONNECTED:
            self.status(ReaderState.DISCONNECTED, "reader released")

    def _main(self) -> None:
        try:
            self.run()
        except Exception as exc:  # never a traceback with data: only the type is reported
            log.error("reader %s stopped: %s", self.name, type(exc).__name__)
            self.status(ReaderState.ERROR, f"reader stopped: {type(exc).__name__}")

    def run(self) -> None:
        raise NotImplementedError
