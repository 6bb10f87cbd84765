"""HID keyboard reports, evdev key events and HID POS reports (recorded layouts)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.hidpos import HidPosError, HidPosReassembler, HidPosScan, parse_aim_field
from drivers.keyboard import BootReportDecoder, EvdevKeyDecoder, KeyMapper, evdev_to_usage

SHIFT = 0x02


def _type(usages: list[tuple[int, int]]) -> list[bytes]:
    """Boot reports for key presses (modifiers, usage), each followed by a release."""
    reports = []
    for mods, usage in usages:
        reports.append(bytes([mods, 0, usage, 0, 0, 0, 0, 0]))
        reports.append(bytes(8))
    return reports


# "PL12%" + Enter as a US-layout scanner sends it (HID usage tables, keyboard page 0x07).
US_SCAN = _type([(SHIFT, 0x13), (SHIFT, 0x0F), (0, 0x1E), (0, 0x1F), (SHIFT, 0x22), (0, 0x28)])


def test_boot_reports_us() -> None:
    decoder = BootReportDecoder("us")
    out: list[str] = []
    for report in US_SCAN:
        out += decoder.feed(report)
    assert out == ["PL12%"]


def test_boot_reports_de_layout_and_swipe_characters() -> None:
    # A German-layout MSR typing ";12=3?" + Enter: ";"=Shift+",", "="=Shift+0, "?"=Shift+ß.
    keys = [(SHIFT, 0x36), (0, 0x1E), (0, 0x1F), (SHIFT, 0x27), (0, 0x20), (SHIFT, 0x2D)]
    keys += [(0, 0x1C), (0, 0x1D), (0x40, 0x14), (0, 0x28)]  # z, y (QWERTZ), AltGr+Q = @
    decoder = BootReportDecoder("de")
    out: list[str] = []
    for report in _type(keys):
        out += decoder.feed(report)
    assert out == [";12=3?zy@"]


def test_boot_report_rollover_and_report_id_and_held_keys() -> None:
    decoder = BootReportDecoder("us", report_id=1)
    assert decoder.feed(b"\x02" + bytes(8)) == []  # another report id
    assert decoder.feed(bytes([1, 0, 0, 0x04, 0, 0, 0, 0, 0])) == []
    assert decoder.feed(bytes([1, 0, 0, 0x04, 0x05, 0, 0, 0, 0])) == []  # a held, b new
    assert decoder.feed(bytes([1, 0, 0, 1, 1, 1, 1, 1, 1])) == []  # phantom state
    assert decoder.feed(bytes([1, 0, 0, 0x28, 0, 0, 0, 0, 0])) == ["ab"]
    assert decoder.feed(b"\x01") == []  # short


def test_dead_key_and_caps_lock() -> None:
    mapper = KeyMapper("de")
    assert mapper.press(0x35, False) == ""  # dead ^
    assert mapper.press(0x2C, False) == "^"  # + space = ^
    mapper.press(0x39, False)  # caps lock
    assert mapper.press(0x04, False) == "A"
    assert mapper.press(0x04, True) == "a"
    assert mapper.press(0x1E, False) == "1"
    with pytest.raises(ValueError):
        KeyMapper("xx")


# Recorded evdev sequence (python-evdev `dev.read()` of a wedge scanner typing "Ab1\n", with
# EV_MSC scan codes and EV_SYN reports between the key events as the kernel sends them).
EV_SEQUENCE = [
    (4, 4, 458977), (1, 42, 1), (0, 0, 0), (4, 4, 458756), (1, 30, 1), (0, 0, 0),
    (4, 4, 458756), (1, 30, 0), (0, 0, 0), (4, 4, 458977), (1, 42, 0), (0, 0, 0),
    (4, 4, 458757), (1, 48, 1), (0, 0, 0), (1, 48, 0), (0, 0, 0),
    (1, 2, 1), (1, 2, 0), (1, 28, 1), (0, 0, 0), (1, 28, 0), (0, 0, 0),
]  # fmt: skip


def test_evdev_sequence_us() -> None:
    assert EvdevKeyDecoder("us").feed_all(EV_SEQUENCE) == ["Ab1"]


def test_evdev_de_and_altgr() -> None:
    # KEY_Y (21) on a German layout is "z"; KEY_RIGHTALT + KEY_Q is "@"; KEY_KPENTER ends.
    events = [(1, 21, 1), (1, 21, 0), (1, 100, 1), (1, 16, 1), (1, 16, 0), (1, 100, 0)]
    events += [(1, 12, 1), (1, 96, 1)]
    assert EvdevKeyDecoder("de").feed_all(events) == ["z@\u00df"]
    assert evdev_to_usage(30) == 0x04 and evdev_to_usage(999) is None


def test_tab_ends_and_backspace() -> None:
    decoder = EvdevKeyDecoder("us", tab_ends=True)
    assert decoder.feed_all([(1, 30, 1), (1, 48, 1), (1, 14, 1), (1, 15, 1)]) == ["a"]


# --- HID POS ---------------------------------------------------------------------------------


def test_hidpos_single_report_honeywell_layout() -> None:
    report = bytes([0x02, 13]) + b"]E0" + b"4006381333931".ljust(56, b"\x00") + b"\x00\x00\x00"
    assert len(report) == 64
    assert HidPosReassembler().feed(report) == HidPosScan("]E0", b"4006381333931")


def test_hidpos_more_data_flag_reassembles() -> None:
    text = b"https://example.com/" + b"x" * 150
    reports = HidPosReassembler.build(text, "]Q1")
    assert len(reports) == 4
    assembler = HidPosReassembler()
    results = [assembler.feed(r) for r in reports]
    assert results[:3] == [None, None, None]
    assert results[3] == HidPosScan("]Q1", text)


def test_hidpos_aim_field_variants() -> None:
    assert parse_aim_field(b"]Q1") == "]Q1"
    assert parse_aim_field(b"Q1\x00") == "]Q1"
    assert parse_aim_field(b"\x00\x00\x00") is None
    assert parse_aim_field(b"\xff\xfe\x00") is None


def test_hidpos_errors() -> None:
    assembler = HidPosReassembler(report_id=2)
    assert assembler.feed(b"") == HidPosError("short_report")
    assert assembler.feed(b"\x03" + bytes(63)) == HidPosError("bad_report_id")
    assert assembler.feed(b"\x02\x01") == HidPosError("short_report")
    assert assembler.feed(bytes([2, 200]) + bytes(62)) == HidPosError("bad_length")
    no_id = HidPosReassembler(report_id=None)
    assert no_id.feed(HidPosReassembler.build(b"abc", "]C0", report_id=None)[0]) == HidPosScan(
        "]C0", b"abc"
    )
    stuck = HidPosReassembler(max_length=100)
    report = bytes([2, 56]) + b"]C0" + bytes(56) + b"\x00\x00\x01"
    results = [stuck.feed(report) for _ in range(3)]
    assert results[1] == HidPosError("too_long")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=70), max_size=10))
def test_fuzz_hid_decoders(reports: list[bytes]) -> None:
    assembler = HidPosReassembler()
    boot = BootReportDecoder("de")
    for report in reports:
        assert isinstance(assembler.feed(report), HidPosScan | HidPosError | None)
        assert isinstance(boot.feed(report), list)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 300), st.integers(0, 3))))
def test_fuzz_evdev_decoder(events: list[tuple[int, int, int]]) -> None:
    for layout in ("us", "de"):
        assert isinstance(EvdevKeyDecoder(layout).feed_all(events), list)
