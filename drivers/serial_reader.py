"""Serial scanners and mag-stripe readers: RS-232, USB CDC-ACM, ptys, any pyserial URL.

The port is given as any ``serial.serial_for_url`` URL (``/dev/ttyACM0``, ``COM3``,
``socket://host:port``, ``loop://``) or, better for USB-serial devices, by what the device
*is* -- ``vid``/``pid`` and optionally ``serial_number`` -- looked up with
``serial.tools.list_ports`` on every (re)connect, so a scanner that comes back as
``/dev/ttyACM1`` after a re-plug is still found.

Unplugging shows up as ``SerialException`` ("device reports readiness to read but returned no
data", or EIO); the reader reports ``disconnected`` and retries with exponential back-off,
reporting ``reconnecting`` until the device is back (``connected``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import serial
import serial.tools.list_ports

from drivers.framing import FRAMINGS, Framer, FramingConfig
from drivers.lifecycle import Sink, ThreadedReader
from drivers.model import ReaderState
from drivers.options import (
    OptionError,
    opt_bool,
    opt_bytes,
    opt_choice,
    opt_float,
    opt_int,
    opt_str,
    scan_options,
)
from drivers.parse import ScanOptions

__all__ = ["SerialReader", "find_port"]

log = logging.getLogger(__name__)

_POLL = 0.05  # float ok: seconds a read blocks before the stop flag is looked at again


def find_port(
    vid: int,
    pid: int,
    serial_number: str | None = None,
    ports: Iterable[Any] | None = None,
) -> str | None:
    """The device path of the serial port with this USB vendor/product (and serial), or None.

    ``ports`` defaults to ``serial.tools.list_ports.comports()``; entries need ``device``,
    ``vid``, ``pid`` and ``serial_number`` attributes.
    """
    candidates = [
        p
        for p in (serial.tools.list_ports.comports() if ports is None else ports)
        if p.vid == vid
        and p.pid == pid
        and (serial_number is None or p.serial_number == serial_number)
    ]
    if not candidates:
        return None
    if len(candidates) > 1:
        log.warning(
            "%d ports match %04x:%04x; set serial_number to choose one", len(candidates), vid, pid
        )
    return str(sorted(candidates, key=lambda p: str(p.device))[0].device)


class SerialReader(ThreadedReader):
    """A scanner on a serial port.

    Options (all optional): ``baudrate`` (9600), ``bytesize``, ``parity`` ("N"), ``stopbits``,
    ``rtscts``, ``xonxoff``; ``framing`` ("cr", "lf", "crlf", "tab", "none"), ``prefix``,
    ``inter_byte_timeout`` (0.05 s, for framing "none"), ``stale_timeout`` (1 s);
    ``vid``/``pid``/``serial_number`` to find a USB-serial device instead of ``url``;
    ``reconnect_initial`` (0.1 s) and ``reconnect_max`` (5 s) back-off; ``debounce`` (1 s);
    and the parse options of :func:`drivers.options.scan_options`.
    """

    kind = "serial"

    def __init__(
        self,
        name: str,
        url: str | None = None,
        options: Mapping[str, object] | None = None,
        *,
        sink: Sink | None = None,
        scan: ScanOptions | None = None,
        port_factory: Callable[..., Any] = serial.serial_for_url,
        list_ports: Callable[[], Iterable[Any]] | None = None,
    ) -> None:
        opts: Mapping[str, object] = options or {}
        scan = scan or scan_options(opts)
        super().__init__(name, scan=scan, debounce=opt_float(opts, "debounce", 1.0), sink=sink)
        self.url = url
        self.vid = opt_int(opts, "vid", None)
        self.pid = opt_int(opts, "pid", None)
        self.serial_number = opt_str(opts, "serial_number", None)
        if url is None and (self.vid is None or self.pid is None):
            raise ValueError(f"reader {name}: give a url, or vid and pid of a USB-serial device")
        self.framing = FramingConfig(
            framing=opt_choice(opts, "framing", FRAMINGS, "cr"),
            prefix=opt_bytes(opts, "prefix"),
            inter_byte_timeout=opt_float(opts, "inter_byte_timeout", 0.05),
            stale_timeout=opt_float(opts, "stale_timeout", 1.0),
        )
        stopbits = opt_float(opts, "stopbits", 1)
        if stopbits not in (1, 1.5, 2):
            raise OptionError("stopbits", "option stopbits must be 1, 1.5 or 2")
        baudrate = opt_int(opts, "baudrate", 9600)
        if baudrate is None or baudrate < 1:
            raise OptionError("baudrate", "option baudrate must be a positive whole number")
        bytesize = opt_int(opts, "bytesize", 8)
        if bytesize not in (5, 6, 7, 8):
            raise OptionError("bytesize", "option bytesize must be 5, 6, 7 or 8")
        self.port_settings: dict[str, object] = {
            "baudrate": baudrate,
            "bytesize": bytesize,
            "parity": opt_choice(opts, "parity", ("N", "E", "O", "M", "S"), "N"),
            "stopbits": int(stopbits) if stopbits in (1, 2) else stopbits,
            "rtscts": opt_bool(opts, "rtscts", False),
            "xonxoff": opt_bool(opts, "xonxoff", False),
        }
        self.reconnect_initial = opt_float(opts, "reconnect_initial", 0.1)
        self.reconnect_max = opt_float(opts, "reconnect_max", 5.0)
        self._port_factory = port_factory
        self._list_ports = list_ports
        self._port: Any = None
        self.connects = 0  # how many times the port was opened (for tests and `devices`)

    # -- connection --------------------------------------------------------------------------

    def resolve(self) -> str | None:
        """Where the device is now: the configured URL, or the port matching vid/pid/serial."""
        if self.vid is not None and self.pid is not None:
            ports = self._list_ports() if self._list_ports is not None else None
            return find_port(self.vid, self.pid, self.serial_number, ports)
        return self.url

    def _connect(self) -> Any:
        where = self.resolve()
        if where is None:
            raise LookupError("no matching device is plugged in")
        kwargs: dict[str, object] = dict(self.port_settings)
        timeout = _POLL
        if self.framing.framing == "none":
            timeout = min(_POLL, self.framing.inter_byte_timeout / 2)
        kwargs["timeout"] = timeout
        if "://" not in where:
            kwargs["exclusive"] = True  # a second program on the same port is a config error
        return self._port_factory(where, **kwargs)

    def run(self) -> None:
        delay = self.reconnect_initial
        framer = Framer(self.framing)
        while not self.stopping.is_set():
            try:
                port = self._connect()
            except (serial.SerialException, OSError, LookupError, ValueError) as exc:
                self.status(ReaderState.RECONNECTING, f"waiting for the device ({_why(exc)})")
                self.stopping.wait(delay)
                delay = min(delay * 2, self.reconnect_max)
                continue
            delay = self.reconnect_initial
            self._port = port
            self.connects += 1
            self.status(ReaderState.CONNECTED, "connected")
            try:
                self._pump(port, framer)
            except (serial.SerialException, OSError) as exc:
                if not self.stopping.is_set():
                    self.status(ReaderState.DISCONNECTED, f"device lost ({_why(exc)})")
            finally:
                self._port = None
                framer.reset()
                with contextlib.suppress(Exception):
                    port.close()
        if self.health is ReaderState.CONNECTED:
            self.status(ReaderState.DISCONNECTED, "reader released")

    def _pump(self, port: Any, framer: Framer) -> None:
        clock = self.clock
        while not self.stopping.is_set():
            data = port.read(1)
            if data:
                waiting = port.in_waiting
                if waiting:
                    data += port.read(waiting)
                frames = framer.feed(data, clock())
            else:
                frames = framer.poll(clock())
            for frame in frames:
                self.deliver_data(frame)

    def _wake(self) -> None:
        port = self._port
        cancel = getattr(port, "cancel_read", None)
        if cancel is not None:
            with contextlib.suppress(Exception):
                cancel()


def _why(exc: BaseException) -> str:
    """A short reason for a status message (exception text from the OS, never scan data)."""
    if isinstance(exc, LookupError):
        return "not plugged in"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    if "readiness to read but returned no data" in text:
        return "unplugged"
    return text[:120] or type(exc).__name__
