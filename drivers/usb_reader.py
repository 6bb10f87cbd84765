"""USB scanners through libusb (pyusb): HID POS mode and boot-keyboard mode.

The device is found by ``vid``/``pid`` (and ``serial_number`` when several are plugged in),
never by bus address. On claim the kernel's driver (usbhid) is detached from the interface
so the scanner's keystrokes stop reaching other programs; it is re-attached on release, so
the scanner works as a keyboard again when the till software is not running.

Options: ``vid``, ``pid`` (numbers or "0x0c2e"; or ``url = "usb://0c2e:0b61"``),
``serial_number``, ``protocol`` ("hidpos" or "keyboard"; default: from the interface -- boot
keyboard protocol means "keyboard"), ``interface`` (number; default: the first HID
interface), ``report_id`` (HID POS, default 2; keyboard: none), ``layout`` ("us", "de"),
``reconnect_initial``/``reconnect_max``, ``debounce`` and the parse options.

A pyusb backend can be passed (``backend=``) -- the tests use one that plays recorded
reports, because no USB host exists on the build machines.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Mapping
from typing import Any

import usb.core
import usb.util

from drivers.hidpos import HidPosError, HidPosReassembler
from drivers.keyboard import BootReportDecoder
from drivers.lifecycle import Sink, ThreadedReader
from drivers.model import ReaderState
from drivers.options import opt_float, opt_int, opt_str, scan_options
from drivers.parse import ScanOptions

__all__ = ["UsbReader", "parse_usb_url"]

log = logging.getLogger(__name__)

_HID_CLASS = 3
_BOOT_KEYBOARD = 1
_GONE = {errno.ENODEV, errno.EIO, errno.ENOENT, errno.EPIPE}
_READ_TIMEOUT_MS = 100


def parse_usb_url(url: str | None) -> tuple[int | None, int | None]:
    """``"usb://0c2e:0b61"`` -> ``(0x0C2E, 0x0B61)``; None -> ``(None, None)``."""
    if not url:
        return None, None
    rest = url.removeprefix("usb://")
    try:
        vid, pid = rest.split(":", 1)
        return int(vid, 16), int(pid, 16)
    except ValueError:
        raise ValueError(
            "a usb url looks like usb://VVVV:PPPP (hex vendor and product id)"
        ) from None


class UsbReader(ThreadedReader):
    kind = "usb"

    def __init__(
        self,
        name: str,
        url: str | None = None,
        options: Mapping[str, object] | None = None,
        *,
        sink: Sink | None = None,
        scan: ScanOptions | None = None,
        backend: Any = None,
    ) -> None:
        opts: Mapping[str, object] = options or {}
        super().__init__(
            name,
            scan=scan or scan_options(opts),
            debounce=opt_float(opts, "debounce", 1.0),
            sink=sink,
        )
        url_vid, url_pid = parse_usb_url(url)
        self.vid = opt_int(opts, "vid", url_vid)
        self.pid = opt_int(opts, "pid", url_pid)
        if self.vid is None or self.pid is None:
            raise ValueError(f"reader {name}: a USB reader needs vid and pid")
        self.serial_number = opt_str(opts, "serial_number", None)
        self.protocol = opt_str(opts, "protocol", None)
        if self.protocol not in (None, "hidpos", "keyboard"):
            raise ValueError(f"reader {name}: protocol must be 'hidpos' or 'keyboard'")
        self.interface = opt_int(opts, "interface", None)
        self.report_id = opt_int(opts, "report_id", None)
        self.layout = opt_str(opts, "layout", "us") or "us"
        BootReportDecoder(self.layout)  # validates the layout now
        self.reconnect_initial = opt_float(opts, "reconnect_initial", 0.2)
        self.reconnect_max = opt_float(opts, "reconnect_max", 5.0)
        self.backend = backend
        self.connects = 0

    # -- device handling ---------------------------------------------------------------------

    def _match(self, dev: Any) -> bool:
        if self.serial_number is None:
            return True
        try:
            return bool(usb.util.get_string(dev, dev.iSerialNumber) == self.serial_number)
        except (usb.core.USBError, ValueError, NotImplementedError):
            return False

    def find(self) -> Any:
        return usb.core.find(
            idVendor=self.vid, idProduct=self.pid, backend=self.backend, custom_match=self._match
        )

    def _interface(self, dev: Any) -> Any:
        cfg = dev.get_active_configuration()
        for intf in cfg:
            if self.interface is not None:
                if intf.bInterfaceNumber == self.interface:
                    return intf
            elif intf.bInterfaceClass == _HID_CLASS:
                return intf
        raise LookupError("the device has no matching HID interface")

    def _attach(self, dev: Any) -> tuple[Any, Any, bool]:
        """Detach the kernel driver, claim the interface; (interface, IN endpoint, detached)."""
        try:
            dev.get_active_configuration()
        except usb.core.USBError:
            dev.set_configuration()
        intf = self._interface(dev)
        number = intf.bInterfaceNumber
        detached = False
        with contextlib.suppress(NotImplementedError):
            if dev.is_kernel_driver_active(number):
                dev.detach_kernel_driver(number)
                detached = True
        usb.util.claim_interface(dev, number)
        endpoint = usb.util.find_descriptor(
            intf,
            custom_match=lambda e: (
                usb.util.endpoint_direction(e.bEndpointAddress) == usb.util.ENDPOINT_IN
            ),
        )
        if endpoint is None:
            raise LookupError("the HID interface has no IN endpoint")
        return intf, endpoint, detached

    def _detach(self, dev: Any, intf: Any, detached: bool) -> None:
        number = intf.bInterfaceNumber
        with contextlib.suppress(usb.core.USBError):
            usb.util.release_interface(dev, number)
        if detached:
            with contextlib.suppress(usb.core.USBError, NotImplementedError):
                dev.attach_kernel_driver(number)
        usb.util.dispose_resources(dev)

    # -- the reading thread ------------------------------------------------------------------

    def run(self) -> None:
        delay = self.reconnect_initial
        while not self.stopping.is_set():
            try:
                dev = self.find()
                if dev is None:
                    raise LookupError("not plugged in")
                intf, endpoint, detached = self._attach(dev)
            except (usb.core.USBError, LookupError, ValueError) as exc:
                self.status(ReaderState.RECONNECTING, f"waiting for the device ({_why(exc)})")
                self.stopping.wait(delay)
                delay = min(delay * 2, self.reconnect_max)
                continue
            delay = self.reconnect_initial
            self.connects += 1
            self.status(ReaderState.CONNECTED, "connected")
            try:
                self._pump(intf, endpoint)
            except usb.core.USBError as exc:
                if not self.stopping.is_set():
                    self.status(ReaderState.DISCONNECTED, f"device lost ({_why(exc)})")
            finally:
                self._detach(dev, intf, detached)
        if self.health is ReaderState.CONNECTED:
            self.status(ReaderState.DISCONNECTED, "reader released")

    def _pump(self, intf: Any, endpoint: Any) -> None:
        protocol = self.protocol
        if protocol is None:
            protocol = "keyboard" if intf.bInterfaceProtocol == _BOOT_KEYBOARD else "hidpos"
        size = int(endpoint.wMaxPacketSize)
        if protocol == "keyboard":
            keys = BootReportDecoder(self.layout, report_id=self.report_id)
            hidpos = None
        else:
            keys = None
            hidpos = HidPosReassembler(0x02 if self.report_id is None else self.report_id)
        while not self.stopping.is_set():
            try:
                report = bytes(endpoint.read(size, timeout=_READ_TIMEOUT_MS))
            except usb.core.USBTimeoutError:
                continue
            except usb.core.USBError as exc:
                if exc.errno in _GONE or exc.errno is None:
                    raise
                log.info("reader %s: USB read error %s, retrying", self.name, exc.errno)
                continue
            if keys is not None:
                for line in keys.feed(report):
                    self._deliver_text(line)
            elif hidpos is not None:
                result = hidpos.feed(report)
                if isinstance(result, HidPosError):
                    log.info("reader %s: bad HID POS report (%s)", self.name, result.code)
                elif result is not None:
                    self.deliver_data(result.data, aim=result.aim)

    def _deliver_text(self, line: str) -> None:
        self.deliver_data(line.encode("utf-8"))


def _why(exc: BaseException) -> str:
    if isinstance(exc, LookupError):
        return str(exc) or "not plugged in"
    if isinstance(exc, usb.core.USBError) and exc.strerror:
        return str(exc.strerror)
    return type(exc).__name__
