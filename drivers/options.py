"""Reading a reader's ``options`` table (plain values from TOML) with clear errors.

:data:`READER_OPTIONS` lists the settings each kind of reader knows: anything else (a typo
such as ``baudrat``) is refused by :func:`check_option_names` rather than silently ignored.
A bad value raises :class:`OptionError`, which names the setting.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from drivers.msr import layouts_from_options
from drivers.parse import ScanOptions, symbologies

__all__ = [
    "READER_OPTIONS",
    "OptionError",
    "check_option_names",
    "opt_bool",
    "opt_bytes",
    "opt_choice",
    "opt_float",
    "opt_int",
    "opt_str",
    "scan_options",
]


class OptionError(ValueError):
    """A reader setting that cannot be used; ``key`` names it (``str()`` says why)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


# The settings every reader kind reads (see each reader's docstring), by kind. A kind missing
# here (one added with ``drivers.stream.register_kind``) has its names unchecked.
_SCAN = frozenset({"own_prefixes", "formats", "msr_layouts", "lrc", "debounce"})
_FIND = frozenset({"vid", "pid", "serial_number", "reconnect_initial", "reconnect_max"})
READER_OPTIONS: dict[str, frozenset[str]] = {
    "keyboard": frozenset(),
    "serial": _SCAN
    | _FIND
    | {
        "baudrate",
        "bytesize",
        "parity",
        "stopbits",
        "rtscts",
        "xonxoff",
        "framing",
        "prefix",
        "inter_byte_timeout",
        "stale_timeout",
    },
    "usb": _SCAN | _FIND | {"protocol", "interface", "report_id", "layout"},
    "hidraw": _SCAN | _FIND | {"protocol", "report_id", "layout", "sysfs"},
    "evdev": _SCAN | _FIND | {"layout", "tab_ends", "grab"},
    "webcam": _SCAN | {"confirm", "rearm_frames", "rearm_seconds", "width", "height"},
}


def check_option_names(kind: str, options: Mapping[str, object]) -> None:
    """Refuse a setting the reader kind does not know (OptionError naming it)."""
    known = READER_OPTIONS.get(kind)
    if known is None:
        return
    for key in options:
        if key not in known:
            hint = ", ".join(sorted(known)) if known else "none"
            raise OptionError(key, f"unknown option {key!r} for a {kind} reader; it knows: {hint}")


def opt_float(options: Mapping[str, object], key: str, default: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OptionError(key, f"option {key} must be a number of seconds")
    return float(value)


def opt_int(options: Mapping[str, object], key: str, default: int | None) -> int | None:
    value = options.get(key, default)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return int(value, 0)  # "0x0c2e" or "3118"
        except ValueError:
            raise OptionError(key, f"option {key} must be a whole number") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(key, f"option {key} must be a whole number")
    return value


def opt_str(options: Mapping[str, object], key: str, default: str | None) -> str | None:
    value = options.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str):
        raise OptionError(key, f"option {key} must be text")
    return value


def opt_choice(
    options: Mapping[str, object], key: str, choices: Collection[str], default: str
) -> str:
    """Text that must be one of ``choices``."""
    value = opt_str(options, key, default) or default
    if value not in choices:
        use = ", ".join(repr(c) for c in sorted(choices))
        raise OptionError(key, f"option {key} must be one of {use}, not {value!r}")
    return value


def opt_bool(options: Mapping[str, object], key: str, default: bool) -> bool:
    value = options.get(key, default)
    if not isinstance(value, bool):
        raise OptionError(key, f"option {key} must be true or false")
    return value


def opt_bytes(options: Mapping[str, object], key: str, default: bytes = b"") -> bytes:
    """Text such as ``"\\u0002"`` (TOML escape) or bytes; encoded as Latin-1."""
    value = options.get(key, default)
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise OptionError(key, f"option {key} must be text")
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        raise OptionError(key, f"option {key} must be bytes 0-255 (\\u0000-\\u00ff)") from None


def scan_options(options: Mapping[str, object]) -> ScanOptions:
    """The parse settings shared by every reader kind.

    Keys: ``own_prefixes`` (list of digit strings), ``formats`` (list of symbology names),
    ``msr_layouts`` (list of ``{track, pattern}``), ``lrc`` ("auto", "absent", "required").
    """
    prefixes = options.get("own_prefixes", ())
    if isinstance(prefixes, str) or not isinstance(prefixes, list | tuple):
        raise OptionError("own_prefixes", "option own_prefixes must be a list of digit strings")
    own = tuple(str(p) for p in prefixes)
    if not all(p.isascii() and p.isdigit() for p in own):
        raise OptionError("own_prefixes", "option own_prefixes must be a list of digit strings")
    formats = options.get("formats")
    if formats is not None and (isinstance(formats, str) or not isinstance(formats, list | tuple)):
        raise OptionError("formats", "option formats must be a list of names")
    try:
        chosen = symbologies(formats)
    except ValueError as exc:
        raise OptionError("formats", f"option formats: {exc}") from None
    try:
        layouts = layouts_from_options(options.get("msr_layouts"))
    except (ValueError, re.error) as exc:
        raise OptionError("msr_layouts", f"option msr_layouts: {exc}") from None
    return ScanOptions(
        own_prefixes=own,
        formats=chosen,
        msr_layouts=layouts,
        lrc=opt_choice(options, "lrc", ("auto", "absent", "required"), "auto"),
    )
