"""Reader settings: every kind's known names, and a typo refused rather than ignored."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest

from drivers.options import READER_OPTIONS, OptionError, check_option_names
from drivers.stream import reader_from_config


class Recording(Mapping[str, object]):
    """Options that remember every name a reader asked for."""

    def __init__(self, values: dict[str, object]) -> None:
        self.data = values
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> object:
        self.asked.add(key)
        return self.data[key]

    def get(self, key: str, default: object = None) -> object:
        self.asked.add(key)
        return self.data.get(key, default)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return key in self.data

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def _serial(opts: Recording) -> object:
    from drivers.serial_reader import SerialReader

    return SerialReader("r", "loop://", opts)


def _usb(opts: Recording) -> object:
    from drivers.usb_reader import UsbReader

    return UsbReader("r", "usb://0c2e:0b61", opts)


def _hidraw(opts: Recording) -> object:
    from drivers.hidraw_reader import HidrawReader

    return HidrawReader("r", "/dev/hidraw0", opts)


def _evdev(opts: Recording) -> object:
    from drivers.evdev_reader import EvdevReader

    return EvdevReader("r", "/dev/input/event0", opts)


@pytest.mark.parametrize(
    ("kind", "build"),
    [("serial", _serial), ("usb", _usb), ("hidraw", _hidraw), ("evdev", _evdev)],
)
def test_known_names_are_what_the_reader_reads(kind: str, build: object) -> None:
    """READER_OPTIONS is the list the typo check uses: it must not drift from the code."""
    opts = Recording({"debounce": 0})  # not empty: ``options or {}`` would drop it
    build(opts)  # type: ignore[operator]
    assert opts.asked == READER_OPTIONS[kind]


@pytest.mark.parametrize(
    ("kind", "options", "key"),
    [
        ("serial", {"baudrat": 115200}, "baudrat"),
        ("serial", {"framing": "crr"}, "framing"),
        ("serial", {"baudrate": "fast"}, "baudrate"),
        ("webcam", {"widht": 640}, "widht"),
        ("keyboard", {"grab": True}, "grab"),
    ],
)
def test_bad_setting_is_refused_naming_it(kind: str, options: dict[str, object], key: str) -> None:
    with pytest.raises(OptionError) as info:
        reader_from_config("r", kind, "loop://", options)
    assert info.value.key == key
    assert key in str(info.value)


def test_a_registered_kind_is_not_checked() -> None:
    check_option_names("telepathy", {"anything": 1})
