"""The pyusb path against a simulated device (a pyusb backend playing recorded reports)."""

from __future__ import annotations

import queue
import time

import pytest

from drivers.hidpos import HidPosReassembler
from drivers.model import CardRead, ReaderState, ReaderStatus
from drivers.parse import ParseError
from drivers.usb_reader import UsbReader, parse_usb_url
from tests.drivers.fake_usb import FakeBackend, FakeHidDevice

Event = CardRead | ReaderStatus | ParseError


class Collector:
    def __init__(self) -> None:
        self.events: queue.Queue[Event] = queue.Queue()

    def __call__(self, event: Event) -> None:
        self.events.put(event)

    def next(self, kind: type, state: ReaderState | None = None, timeout: float = 3) -> Event:
        while True:
            event = self.events.get(timeout=timeout)
            if isinstance(event, kind) and (state is None or event.state == state):  # type: ignore[union-attr]
                return event


OPTS = {"vid": 0x0C2E, "pid": 0x0B61, "debounce": 0, "reconnect_initial": 0.02}


def _keys(text: str) -> list[bytes]:
    """Boot reports typing lower-case letters and digits, then Enter."""
    reports = []
    for char in text:
        usage = 0x04 + ord(char) - 97 if char.isalpha() else 0x1E + "1234567890".index(char)
        reports += [bytes([0, 0, usage, 0, 0, 0, 0, 0]), bytes(8)]
    return reports + [bytes([0, 0, 0x28, 0, 0, 0, 0, 0]), bytes(8)]


def test_hidpos_scanner_reports_detach_and_reattach() -> None:
    device = FakeHidDevice(0x0C2E, 0x0B61, "SN1")
    other = FakeHidDevice(0x0C2E, 0x0B61, "SN2")
    sink = Collector()
    reader = UsbReader(
        "usb", None, {**OPTS, "serial_number": "SN1"}, sink=sink, backend=FakeBackend(other, device)
    )
    reader.start()
    try:
        sink.next(ReaderStatus, ReaderState.CONNECTED)
        assert device.kernel_driver is False and device.detach_calls == 1
        assert other.detach_calls == 0  # matched by serial number, not by position
        qr = b"https://example.com/c/" + b"PL0000001234567" * 6
        device.play(HidPosReassembler.build(qr, "]Q1"))
        device.play(HidPosReassembler.build(b"4006381333931", "]E0"))
        first, second = sink.next(CardRead), sink.next(CardRead)
        assert first.text == qr.decode() and first.aim == "]Q1"  # type: ignore[union-attr]
        assert second.text == "4006381333931" and second.symbology.value == "ean13"  # type: ignore[union-attr]
    finally:
        reader.close()
    assert device.kernel_driver is True and device.attach_calls == 1  # handed back


def test_boot_keyboard_scanner_and_unplug() -> None:
    device = FakeHidDevice(0x0C2E, 0x0B61, "K1", protocol=1, packet_size=8)
    backend = FakeBackend(device)
    sink = Collector()
    reader = UsbReader("kbd", "usb://0c2e:0b61", {"debounce": 0, "reconnect_initial": 0.02},
                       sink=sink, backend=backend)  # fmt: skip
    reader.start()
    try:
        sink.next(ReaderStatus, ReaderState.CONNECTED)
        device.play(_keys("pl123"))
        assert sink.next(CardRead).text == "pl123"  # type: ignore[union-attr]
        device.plugged = False
        sink.next(ReaderStatus, ReaderState.DISCONNECTED)
        sink.next(ReaderStatus, ReaderState.RECONNECTING)
        device.plugged = True
        sink.next(ReaderStatus, ReaderState.CONNECTED)
        device.play(_keys("again"))
        assert sink.next(CardRead).text == "again"  # type: ignore[union-attr]
        assert reader.connects == 2
    finally:
        reader.close()


def test_bad_reports_do_not_stop_the_reader() -> None:
    device = FakeHidDevice(0x0C2E, 0x0B61, "X")
    sink = Collector()
    reader = UsbReader("usb", None, OPTS, sink=sink, backend=FakeBackend(device))
    reader.start()
    try:
        sink.next(ReaderStatus, ReaderState.CONNECTED)
        device.play([b"", b"\x07junk", bytes([2, 250]) + bytes(62)])
        device.play(HidPosReassembler.build(b"OK1", "]C0"))
        assert sink.next(CardRead).text == "OK1"  # type: ignore[union-attr]
    finally:
        reader.close()


def test_absent_device_waits() -> None:
    sink = Collector()
    reader = UsbReader("usb", None, OPTS, sink=sink, backend=FakeBackend())
    reader.start()
    try:
        sink.next(ReaderStatus, ReaderState.RECONNECTING)
    finally:
        start = time.monotonic()
        reader.close()
        assert time.monotonic() - start < 2


def test_usb_config_errors() -> None:
    assert parse_usb_url("usb://0c2e:0b61") == (0x0C2E, 0x0B61)
    with pytest.raises(ValueError):
        parse_usb_url("usb://nothex")
    with pytest.raises(ValueError):
        UsbReader("u", None, {})
    with pytest.raises(ValueError):
        UsbReader("u", None, {**OPTS, "protocol": "magic"})
    with pytest.raises(ValueError):
        UsbReader("u", None, {**OPTS, "layout": "klingon"})
