"""hidraw and evdev readers: report/event decoding through the reader threads.

The device nodes cannot exist on the build machines (no uhid, no uinput): a SOCK_SEQPACKET
socket pair stands in for a hidraw node (one read = one report, as hidraw gives), and a small
stand-in for the python-evdev module plays recorded key events. Real-device tests are marked
``hardware`` and skipped when no device is configured.
"""

from __future__ import annotations

import errno
import os
import queue
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar, cast

import pytest

from drivers.evdev_reader import EvdevReader
from drivers.hidpos import HidPosReassembler
from drivers.hidraw_reader import HidrawReader, find_hidraw
from drivers.model import CardRead, ReaderState, ReaderStatus, Symbology
from tests.drivers.test_hid import EV_SEQUENCE

_E = TypeVar("_E")


class Collector:
    def __init__(self) -> None:
        self.events: queue.Queue[Any] = queue.Queue()

    def __call__(self, event: Any) -> None:
        self.events.put(event)

    def next(self, kind: type[_E], state: ReaderState | None = None, timeout: float = 3) -> _E:
        """The next event of ``kind`` (``state`` is only given for a ``ReaderStatus``)."""
        while True:
            event = self.events.get(timeout=timeout)
            if isinstance(event, kind) and (
                state is None or cast(ReaderStatus, event).state == state
            ):
                return event


# --- hidraw ----------------------------------------------------------------------------------


class FakeHidraw:
    def __init__(self) -> None:
        self.device: socket.socket | None = None
        self.node: socket.socket | None = None
        self.plug()

    def plug(self) -> None:
        self.device, self.node = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    def unplug(self) -> None:
        assert self.device is not None and self.node is not None
        self.device.close()
        self.node.close()
        self.device = self.node = None

    def open(self, path: str) -> int:
        if self.node is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        return os.dup(self.node.fileno())

    def send(self, reports: list[bytes]) -> None:
        assert self.device is not None
        for report in reports:
            self.device.send(report)


def test_hidraw_hidpos_reports_and_replug() -> None:
    fake = FakeHidraw()
    sink = Collector()
    reader = HidrawReader(
        "hid", "/dev/hidraw9", {"debounce": 0, "reconnect_initial": 0.02}, sink=sink,
        opener=fake.open,
    )  # fmt: skip
    reader.start()
    try:
        sink.next(ReaderStatus, ReaderState.CONNECTED)
        fake.send(HidPosReassembler.build(b"PL" + b"7" * 120, "]C0"))
        read = sink.next(CardRead)
        assert read.text == "PL" + "7" * 120 and read.symbology is Symbology.CODE128
        fake.unplug()
        sink.next(ReaderStatus, ReaderState.DISCONNECTED)
        fake.plug()
        sink.next(ReaderStatus, ReaderState.CONNECTED)
        fake.send(HidPosReassembler.build(b"NEXT", "]Q1"))
        assert sink.next(CardRead).text == "NEXT"
    finally:
        reader.close()


def test_hidraw_keyboard_protocol() -> None:
    fake = FakeHidraw()
    sink = Collector()
    reader = HidrawReader("hid", "/dev/hidraw9", {"debounce": 0, "protocol": "keyboard",
                          "layout": "de"}, sink=sink, opener=fake.open)  # fmt: skip
    reader.start()
    try:
        sink.next(ReaderStatus, ReaderState.CONNECTED)
        fake.send([bytes([0, 0, 0x1C, 0, 0, 0, 0, 0]), bytes(8), bytes([0, 0, 0x28]) + bytes(5)])
        assert sink.next(CardRead).text == "z"
    finally:
        reader.close()


def test_find_hidraw_in_sysfs(tmp_path: Path) -> None:
    for node, hid_id, uniq in [
        ("hidraw0", "0003:0000046D:0000C52B", "x"),
        ("hidraw1", "0003:00000C2E:00000B61", "SN-A"),
        ("hidraw2", "0003:00000C2E:00000B61", "SN-B"),
        ("hidraw3", "garbage", ""),
    ]:
        (tmp_path / node / "device").mkdir(parents=True)
        (tmp_path / node / "device" / "uevent").write_text(f"HID_ID={hid_id}\nHID_UNIQ={uniq}\n")
    assert find_hidraw(0x0C2E, 0x0B61, "SN-B", str(tmp_path)) == "/dev/hidraw2"
    assert find_hidraw(0x0C2E, 0x0B61, None, str(tmp_path)) == "/dev/hidraw1"
    assert find_hidraw(0x1, 0x2, None, str(tmp_path)) is None
    assert find_hidraw(0x1, 0x2, None, str(tmp_path / "none")) is None


# --- evdev -----------------------------------------------------------------------------------


class FakeInputDevice:
    """Stands in for ``evdev.InputDevice``: fd, read(), grab()/ungrab(), info, uniq."""

    registry: dict[str, FakeInputDevice] = {}
    # Set by create() (instances are made without __init__ and share one __dict__).
    r: int
    w: int
    fd: int
    pending: list[SimpleNamespace]
    grabbed: bool
    grabs: int
    unplugged: bool
    info: SimpleNamespace
    uniq: str

    def __init__(self, path: str) -> None:
        if path not in self.registry or self.registry[path].unplugged:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        shared = self.registry[path]
        self.__dict__ = shared.__dict__  # one device, many handles

    @classmethod
    def create(cls, path: str, vid: int = 0x05E0, pid: int = 0x1200) -> FakeInputDevice:
        dev = object.__new__(cls)
        dev.r, dev.w = os.pipe()
        dev.fd = dev.r
        dev.pending = []
        dev.grabbed = False
        dev.grabs = 0
        dev.unplugged = False
        dev.info = SimpleNamespace(vendor=vid, product=pid)
        dev.uniq = "U1"
        cls.registry[path] = dev
        return dev

    def push(self, events: list[tuple[int, int, int]]) -> None:
        self.pending += [SimpleNamespace(type=t, code=c, value=v) for t, c, v in events]
        os.write(self.w, b"x")

    def read(self) -> list[Any]:
        os.read(self.r, 4096)
        if self.unplugged:
            raise OSError(errno.ENODEV, "No such device")
        events, self.pending = self.pending, []
        return events

    def grab(self) -> None:
        self.grabbed = True
        self.grabs += 1

    def ungrab(self) -> None:
        if self.unplugged:
            raise OSError(errno.ENODEV, "No such device")
        self.grabbed = False

    def close(self) -> None:
        pass


FAKE_EVDEV = SimpleNamespace(
    InputDevice=FakeInputDevice, list_devices=lambda: ["/dev/input/event7"]
)


def test_evdev_reader_grabs_decodes_and_survives_unplug() -> None:
    dev = FakeInputDevice.create("/dev/input/event7")
    sink = Collector()
    reader = EvdevReader("wedge", "/dev/input/event7", {"debounce": 0, "reconnect_initial": 0.02},
                         sink=sink, evdev_module=FAKE_EVDEV)  # fmt: skip
    reader.start()
    try:
        sink.next(ReaderStatus, ReaderState.CONNECTED)
        assert dev.grabbed
        dev.push(EV_SEQUENCE)
        read = sink.next(CardRead)
        assert read.text == "Ab1" and read.symbology is Symbology.KEYBOARD
        dev.unplugged = True
        os.write(dev.w, b"x")
        sink.next(ReaderStatus, ReaderState.DISCONNECTED)
        dev2 = FakeInputDevice.create("/dev/input/event7")
        sink.next(ReaderStatus, ReaderState.CONNECTED)
        dev2.push([(1, 30, 1), (1, 30, 0), (1, 28, 1), (1, 28, 0)])
        assert sink.next(CardRead).text == "a"
    finally:
        reader.close()
    assert not dev2.grabbed  # released: the scanner types into windows again


def test_evdev_reader_by_vid_pid_and_missing_module() -> None:
    FakeInputDevice.create("/dev/input/event7", vid=0x1, pid=0x2)
    sink = Collector()
    reader = EvdevReader("w", None, {"vid": 1, "pid": 2, "debounce": 0}, sink=sink,
                         evdev_module=FAKE_EVDEV)  # fmt: skip
    reader.start()
    try:
        sink.next(ReaderStatus, ReaderState.CONNECTED)
    finally:
        reader.close()
    with pytest.raises(ValueError):
        EvdevReader("w", None, {})


@pytest.mark.hardware
def test_real_evdev_device() -> None:
    path = os.environ.get("POS_LOYALTY_EVDEV")
    if not path or not Path(path).exists():
        pytest.skip("set POS_LOYALTY_EVDEV to a scanner's /dev/input/event* to run")
    pytest.importorskip("evdev")
    sink = Collector()
    reader = EvdevReader("real", path, {}, sink=sink)
    reader.start()
    try:
        sink.next(ReaderStatus, ReaderState.CONNECTED)
        print("scan a code now")
        assert isinstance(sink.next(CardRead, timeout=30), CardRead)
    finally:
        reader.close()
