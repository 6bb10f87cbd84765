"""Keyboard-wedge scanners read as Linux input devices, with an exclusive grab.

A scanner in keyboard mode types into whatever window has the focus. Reading its
``/dev/input/eventN`` with python-evdev and ``grab()``-bing it keeps the scans out of every
other window (and out of the cashier's text fields) while the till software runs; on release
the grab ends and the scanner types normally again.

Found by ``url`` (a path; ``/dev/input/by-id/...-event-kbd`` is stable across re-plugs) or by
``vid``/``pid`` (and ``serial_number``, the device's ``uniq``). Needs read access to the node
(udev ``TAG+="uaccess"`` or the ``input`` group). python-evdev is imported only when such a
reader is claimed; without it the reader reports an error status.

Options: ``layout`` ("us", "de"), ``grab`` (true), ``tab_ends`` (false), back-off and parse
options.
"""

from __future__ import annotations

import errno
import importlib
import select
from collections.abc import Mapping
from typing import Any

from drivers.keyboard import EvdevKeyDecoder
from drivers.lifecycle import Sink, ThreadedReader
from drivers.model import ReaderState, Symbology
from drivers.options import opt_bool, opt_float, opt_int, opt_str, scan_options
from drivers.parse import ScanOptions

__all__ = ["EvdevReader"]

_POLL = 0.1  # float ok: seconds


class EvdevReader(ThreadedReader):
    kind = "evdev"

    def __init__(
        self,
        name: str,
        url: str | None = None,
        options: Mapping[str, object] | None = None,
        *,
        sink: Sink | None = None,
        scan: ScanOptions | None = None,
        evdev_module: Any = None,
    ) -> None:
        opts: Mapping[str, object] = options or {}
        scan = scan or scan_options(opts)
        if scan.default_symbology is Symbology.UNKNOWN:
            scan = ScanOptions(
                own_prefixes=scan.own_prefixes,
                formats=scan.formats,
                msr_layouts=scan.msr_layouts,
                default_symbology=Symbology.KEYBOARD,
                lrc=scan.lrc,
            )
        super().__init__(name, scan=scan, debounce=opt_float(opts, "debounce", 1.0), sink=sink)
        self.url = url
        self.vid = opt_int(opts, "vid", None)
        self.pid = opt_int(opts, "pid", None)
        self.serial_number = opt_str(opts, "serial_number", None)
        if url is None and (self.vid is None or self.pid is None):
            raise ValueError(f"reader {name}: give an input device path, or vid and pid")
        self.layout = opt_str(opts, "layout", "us") or "us"
        self.tab_ends = opt_bool(opts, "tab_ends", False)
        EvdevKeyDecoder(self.layout)
        self.grab = opt_bool(opts, "grab", True)
        self.reconnect_initial = opt_float(opts, "reconnect_initial", 0.2)
        self.reconnect_max = opt_float(opts, "reconnect_max", 5.0)
        self._evdev = evdev_module

    def _module(self) -> Any:
        if self._evdev is None:
            self._evdev = importlib.import_module("evdev")
        return self._evdev

    def _open_device(self, evdev: Any) -> Any:
        if self.url is not None:
            return evdev.InputDevice(self.url)
        for path in evdev.list_devices():
            dev = evdev.InputDevice(path)
            info = dev.info
            if (info.vendor, info.product) == (self.vid, self.pid) and (
                self.serial_number is None or dev.uniq == self.serial_number
            ):
                return dev
            dev.close()
        raise FileNotFoundError(errno.ENOENT, "not plugged in")

    def run(self) -> None:
        try:
            evdev = self._module()
        except ImportError:
            self.status(ReaderState.ERROR, "python-evdev is not installed")
            return

        def connect() -> Any:
            dev = self._open_device(evdev)
            if self.grab:
                dev.grab()
            return dev

        def disconnect(dev: Any) -> None:
            try:
                if self.grab:
                    dev.ungrab()
            except OSError:
                pass  # gone already
            dev.close()

        self.reconnect_loop(
            connect,
            self._pump,
            disconnect,
            initial=self.reconnect_initial,
            maximum=self.reconnect_max,
        )

    def _pump(self, dev: Any) -> None:
        decoder = EvdevKeyDecoder(self.layout, tab_ends=self.tab_ends)
        while not self.stopping.is_set():
            ready, _, _ = select.select([dev.fd], [], [], _POLL)
            if not ready:
                continue
            try:
                events = list(dev.read())
            except BlockingIOError:
                continue
            for event in events:
                for line in decoder.feed(event.type, event.code, event.value):
                    self.deliver_data(line.encode("utf-8"))
