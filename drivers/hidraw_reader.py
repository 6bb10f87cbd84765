"""USB/Bluetooth HID scanners read through Linux hidraw (``/dev/hidrawN``).

Every HID device also appears as a hidraw node, which gives its raw input reports without
libusb and without detaching the kernel driver (but *without* stopping keystrokes reaching
other windows in keyboard mode -- use evdev with a grab for that). Each ``read()`` returns one
report, decoded as HID POS (default) or boot keyboard reports.

The node is found by ``vid``/``pid`` (and ``serial_number``) through sysfs
(``/sys/class/hidraw/hidrawN/device/uevent``: ``HID_ID=0003:00000C2E:00000B61``,
``HID_UNIQ=...``), or given as ``url``. The node is root-only unless a udev rule grants
access (``TAG+="uaccess"``). Unplug (ENODEV, or end of file) -> reconnect with back-off.
"""

from __future__ import annotations

import errno
import os
import select
from collections.abc import Callable, Mapping
from pathlib import Path

from drivers.hidpos import HidPosError, HidPosReassembler
from drivers.keyboard import BootReportDecoder
from drivers.lifecycle import Sink, ThreadedReader
from drivers.options import opt_float, opt_int, opt_str, scan_options
from drivers.parse import ScanOptions

__all__ = ["HidrawReader", "find_hidraw"]

_POLL = 0.1  # float ok: seconds


def _uevent(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in lines if "=" in line)


def find_hidraw(
    vid: int, pid: int, serial_number: str | None = None, sysfs: str = "/sys/class/hidraw"
) -> str | None:
    """The ``/dev/hidrawN`` of the device with this vendor/product (and serial), or None."""
    root = Path(sysfs)
    if not root.is_dir():
        return None
    for node in sorted(root.iterdir()):
        info = _uevent(node / "device" / "uevent")
        parts = info.get("HID_ID", "").split(":")
        if len(parts) != 3:
            continue
        try:
            dev_vid, dev_pid = int(parts[1], 16), int(parts[2], 16)
        except ValueError:
            continue
        if (dev_vid, dev_pid) != (vid, pid):
            continue
        if serial_number is not None and info.get("HID_UNIQ") != serial_number:
            continue
        return f"/dev/{node.name}"
    return None


class HidrawReader(ThreadedReader):
    """Options: ``vid``/``pid``/``serial_number`` or a ``url`` path; ``protocol`` ("hidpos",
    "keyboard"), ``report_id``, ``layout``, ``sysfs``, back-off and parse options."""

    kind = "hidraw"

    def __init__(
        self,
        name: str,
        url: str | None = None,
        options: Mapping[str, object] | None = None,
        *,
        sink: Sink | None = None,
        scan: ScanOptions | None = None,
        opener: Callable[[str], int] | None = None,
    ) -> None:
        opts: Mapping[str, object] = options or {}
        super().__init__(
            name,
            scan=scan or scan_options(opts),
            debounce=opt_float(opts, "debounce", 1.0),
            sink=sink,
        )
        self.url = url
        self.vid = opt_int(opts, "vid", None)
        self.pid = opt_int(opts, "pid", None)
        self.serial_number = opt_str(opts, "serial_number", None)
        if url is None and (self.vid is None or self.pid is None):
            raise ValueError(f"reader {name}: give a hidraw path, or vid and pid")
        self.protocol = opt_str(opts, "protocol", "hidpos") or "hidpos"
        if self.protocol not in ("hidpos", "keyboard"):
            raise ValueError(f"reader {name}: protocol must be 'hidpos' or 'keyboard'")
        self.report_id = opt_int(opts, "report_id", None)
        self.layout = opt_str(opts, "layout", "us") or "us"
        BootReportDecoder(self.layout)
        self.sysfs = opt_str(opts, "sysfs", "/sys/class/hidraw") or "/sys/class/hidraw"
        self.reconnect_initial = opt_float(opts, "reconnect_initial", 0.2)
        self.reconnect_max = opt_float(opts, "reconnect_max", 5.0)
        self._opener = opener or (lambda path: os.open(path, os.O_RDONLY | os.O_NONBLOCK))

    def resolve(self) -> str | None:
        if self.vid is not None and self.pid is not None:
            return find_hidraw(self.vid, self.pid, self.serial_number, self.sysfs)
        return self.url

    def run(self) -> None:
        def connect() -> int:
            path = self.resolve()
            if path is None:
                raise FileNotFoundError(errno.ENOENT, "not plugged in")
            return self._opener(path)

        self.reconnect_loop(
            connect,
            self._pump,
            os.close,
            initial=self.reconnect_initial,
            maximum=self.reconnect_max,
        )

    def _pump(self, fd: int) -> None:
        keys = hidpos = None
        if self.protocol == "keyboard":
            keys = BootReportDecoder(self.layout, report_id=self.report_id)
        else:
            hidpos = HidPosReassembler(0x02 if self.report_id is None else self.report_id)
        while not self.stopping.is_set():
            ready, _, _ = select.select([fd], [], [], _POLL)
            if not ready:
                continue
            try:
                report = os.read(fd, 4096)
            except BlockingIOError:
                continue
            if not report:
                raise OSError(errno.ENODEV, "device unplugged")
            if keys is not None:
                for line in keys.feed(report):
                    self.deliver_data(line.encode("utf-8"))
            elif hidpos is not None:
                result = hidpos.feed(report)
                if result is not None and not isinstance(result, HidPosError):
                    self.deliver_data(result.data, aim=result.aim)
