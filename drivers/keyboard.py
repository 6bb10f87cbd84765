"""Keyboard-wedge scanners: HID keyboard reports and Linux key events to characters.

A scanner in keyboard mode "types" each code and presses Enter. What it types depends on the
keyboard layout the scanner emulates (set on the scanner): a German-layout scanner sends the
key *position* of "Z" for a "Y". So decoding needs the same layout as the scanner's.

* :class:`BootReportDecoder` -- 8-byte HID boot-protocol keyboard reports (modifier byte,
  reserved byte, six key usages), as read through pyusb or hidraw;
* :class:`EvdevKeyDecoder` -- Linux input events (``EV_KEY`` code/value), as read through
  evdev;
* both feed a :class:`LineAssembler` that returns a finished scan at Enter (or Tab).

Layouts: ``"us"`` and ``"de"`` (with AltGr and the dead keys ``^``, ``´`` and ````` followed
by space). Pure and stdlib-only; unknown keys are ignored, never an exception.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "EV_KEY",
    "LAYOUTS",
    "BootReportDecoder",
    "EvdevKeyDecoder",
    "KeyMapper",
    "LineAssembler",
    "evdev_to_usage",
]

EV_KEY = 1
ENTER, KP_ENTER, TAB, BACKSPACE, CAPS_LOCK, SPACE = 0x28, 0x58, 0x2B, 0x2A, 0x39, 0x2C

# Modifier bits of a boot report's first byte.
_SHIFT_BITS = 0x02 | 0x20
_ALTGR_BIT = 0x40

Keymap = dict[int, tuple[str, str, str]]  # usage -> (plain, shift, altgr); "" = nothing


def _base() -> Keymap:
    keys: Keymap = {}
    for i, c in enumerate("abcdefghijklmnopqrstuvwxyz"):
        keys[0x04 + i] = (c, c.upper(), "")
    for i, c in enumerate("1234567890"):
        keys[0x1E + i] = (c, "", "")
    keys[SPACE] = (" ", " ", " ")
    for i, c in enumerate("/*-+"):
        keys[0x54 + i] = (c, c, "")
    for i, c in enumerate("1234567890."):
        keys[0x59 + i] = (c, c, "")
    return keys


def _us() -> Keymap:
    keys = _base()
    for i, (plain, shifted) in enumerate(zip("1234567890", "!@#$%^&*()", strict=True)):
        keys[0x1E + i] = (plain, shifted, "")
    for usage, plain, shifted in [
        (0x2D, "-", "_"), (0x2E, "=", "+"), (0x2F, "[", "{"), (0x30, "]", "}"),
        (0x31, "\\", "|"), (0x32, "#", "~"), (0x33, ";", ":"), (0x34, "'", '"'),
        (0x35, "`", "~"), (0x36, ",", "<"), (0x37, ".", ">"), (0x38, "/", "?"),
        (0x64, "\\", "|"),
    ]:  # fmt: skip
        keys[usage] = (plain, shifted, "")
    return keys


def _de() -> Keymap:
    keys = _base()
    keys[0x1C] = ("z", "Z", "")  # QWERTZ: the Y position types z
    keys[0x1D] = ("y", "Y", "")
    keys[0x14] = ("q", "Q", "@")
    keys[0x08] = ("e", "E", "\u20ac")
    keys[0x10] = ("m", "M", "\u00b5")
    shifted_digits = '!"\u00a7$%&/()='
    altgr_digits = ["", "\u00b2", "\u00b3", "", "", "", "{", "[", "]", "}"]
    for i, (plain, shifted) in enumerate(zip("1234567890", shifted_digits, strict=True)):
        keys[0x1E + i] = (plain, shifted, altgr_digits[i])
    for usage, plain, shifted, altgr in [
        (0x2D, "\u00df", "?", "\\"), (0x2E, "\u00b4", "`", ""), (0x2F, "\u00fc", "\u00dc", ""),
        (0x30, "+", "*", "~"), (0x31, "#", "'", ""), (0x32, "#", "'", ""),
        (0x33, "\u00f6", "\u00d6", ""), (0x34, "\u00e4", "\u00c4", ""),
        (0x35, "^", "\u00b0", ""), (0x36, ",", ";", ""), (0x37, ".", ":", ""),
        (0x38, "-", "_", ""), (0x64, "<", ">", "|"),
    ]:  # fmt: skip
        keys[usage] = (plain, shifted, altgr)
    return keys


LAYOUTS: dict[str, Keymap] = {"us": _us(), "de": _de()}
_DEAD: dict[str, frozenset[str]] = {"us": frozenset(), "de": frozenset("^\u00b4`")}

# Linux input key codes -> HID usage ids (the keys a scanner uses).
_EVDEV: dict[int, int] = {}
for _codes, _chars in [
    (range(2, 12), "1234567890"),
    (range(16, 26), "qwertyuiop"),
    (range(30, 39), "asdfghjkl"),
    (range(44, 51), "zxcvbnm"),
]:
    for _code, _char in zip(_codes, _chars, strict=True):
        _EVDEV[_code] = (
            0x04 + ord(_char) - 97 if _char.isalpha() else 0x1E + "1234567890".index(_char)
        )
_EVDEV.update(
    {
        12: 0x2D, 13: 0x2E, 14: BACKSPACE, 15: TAB, 26: 0x2F, 27: 0x30, 28: ENTER, 39: 0x33,
        40: 0x34, 41: 0x35, 43: 0x31, 51: 0x36, 52: 0x37, 53: 0x38, 55: 0x55, 57: SPACE,
        58: CAPS_LOCK, 71: 0x5F, 72: 0x60, 73: 0x61, 74: 0x56, 75: 0x5C, 76: 0x5D, 77: 0x5E,
        78: 0x57, 79: 0x59, 80: 0x5A, 81: 0x5B, 82: 0x62, 83: 0x63, 86: 0x64, 96: KP_ENTER,
        98: 0x54,
    }
)  # fmt: skip
_EVDEV_SHIFT = frozenset({42, 54})  # KEY_LEFTSHIFT, KEY_RIGHTSHIFT
_EVDEV_ALTGR = 100  # KEY_RIGHTALT


def evdev_to_usage(code: int) -> int | None:
    """The HID usage id of a Linux key code (None for keys a scanner does not type)."""
    return _EVDEV.get(code)


@dataclass
class KeyMapper:
    """Key presses (usage + shift/AltGr) -> characters in a layout, with Caps Lock and dead keys.

    ``press`` returns the text the key produces ("" for none), or ``"\\n"`` for Enter and
    ``"\\t"`` for Tab.
    """

    layout: str = "us"
    caps: bool = False
    _dead: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(
                f"unknown keyboard layout {self.layout!r}; use one of {sorted(LAYOUTS)}"
            )
        self._keys = LAYOUTS[self.layout]
        self._dead_keys = _DEAD[self.layout]

    def press(self, usage: int, shift: bool, altgr: bool = False) -> str:
        if usage in (ENTER, KP_ENTER):
            return self._flush_dead() + "\n"
        if usage == TAB:
            return self._flush_dead() + "\t"
        if usage == BACKSPACE:
            return "\b"
        if usage == CAPS_LOCK:
            self.caps = not self.caps
            return ""
        entry = self._keys.get(usage)
        if entry is None:
            return ""
        plain, shifted, alt = entry
        if altgr:
            char = alt
        else:
            use_shift = shift != (self.caps and plain.isalpha())
            char = shifted if use_shift else plain
        if not char:
            return ""
        if self._dead:
            dead, self._dead = self._dead, ""
            return dead if char == " " else dead + char
        if char in self._dead_keys:
            self._dead = char
            return ""
        return char

    def _flush_dead(self) -> str:
        dead, self._dead = self._dead, ""
        return dead


class LineAssembler:
    """Characters -> finished scans. Enter ends a scan (and Tab, if ``tab_ends``)."""

    def __init__(self, *, tab_ends: bool = False, max_length: int = 4096) -> None:
        self.tab_ends = tab_ends
        self.max_length = max_length
        self._chars: list[str] = []

    def feed(self, text: str) -> list[str]:
        lines: list[str] = []
        for char in text:
            if char == "\n" or (char == "\t" and self.tab_ends):
                if self._chars:
                    lines.append("".join(self._chars))
                self._chars.clear()
            elif char == "\b":
                if self._chars:
                    self._chars.pop()
            elif len(self._chars) < self.max_length:
                self._chars.append(char)
        return lines

    def reset(self) -> None:
        self._chars.clear()


class BootReportDecoder:
    """HID boot-protocol keyboard reports -> finished scans (one string per Enter).

    A report is ``[modifiers, reserved, key1..key6]``; with ``report_id`` set, reports start
    with that id byte (and others are ignored). A key counts when it appears in a report and
    was not in the previous one. Short or malformed reports are ignored.
    """

    def __init__(
        self, layout: str = "us", *, report_id: int | None = None, tab_ends: bool = False
    ) -> None:
        self.mapper = KeyMapper(layout)
        self.lines = LineAssembler(tab_ends=tab_ends)
        self.report_id = report_id
        self._down: frozenset[int] = frozenset()

    def feed(self, report: bytes) -> list[str]:
        if self.report_id is not None:
            if not report or report[0] != self.report_id:
                return []
            report = report[1:]
        if len(report) < 3:
            return []
        modifiers, keys = report[0], [k for k in report[2:8] if k]
        if keys and all(k == 0x01 for k in keys):
            return []  # phantom state (rollover error): keep the previous state
        text = ""
        for usage in keys:
            if usage not in self._down:
                text += self.mapper.press(
                    usage, bool(modifiers & _SHIFT_BITS), bool(modifiers & _ALTGR_BIT)
                )
        self._down = frozenset(keys)
        return self.lines.feed(text)


class EvdevKeyDecoder:
    """Linux input events ``(type, code, value)`` -> finished scans.

    Only ``EV_KEY`` events matter: value 1 is a press, 0 a release, 2 an auto-repeat (taken
    as a press, as a terminal would).
    """

    def __init__(self, layout: str = "us", *, tab_ends: bool = False) -> None:
        self.mapper = KeyMapper(layout)
        self.lines = LineAssembler(tab_ends=tab_ends)
        self._shift: set[int] = set()
        self._altgr = False

    def feed(self, type_: int, code: int, value: int) -> list[str]:
        if type_ != EV_KEY:
            return []
        if code in _EVDEV_SHIFT:
            if value:
                self._shift.add(code)
            else:
                self._shift.discard(code)
            return []
        if code == _EVDEV_ALTGR:
            self._altgr = bool(value)
            return []
        if value not in (1, 2):
            return []
        usage = _EVDEV.get(code)
        if usage is None:
            return []
        return self.lines.feed(self.mapper.press(usage, bool(self._shift), self._altgr))

    def feed_all(self, events: Iterable[tuple[int, int, int]]) -> list[str]:
        out: list[str] = []
        for type_, code, value in events:
            out += self.feed(type_, code, value)
        return out
