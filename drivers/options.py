"""Reading a reader's ``options`` table (plain values from TOML) with clear errors."""

from __future__ import annotations

from collections.abc import Mapping

from drivers.msr import layouts_from_options
from drivers.parse import ScanOptions, symbologies

__all__ = ["opt_bool", "opt_bytes", "opt_float", "opt_int", "opt_str", "scan_options"]


def opt_float(options: Mapping[str, object], key: str, default: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"option {key} must be a number of seconds")
    return float(value)


def opt_int(options: Mapping[str, object], key: str, default: int | None) -> int | None:
    value = options.get(key, default)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return int(value, 0)  # "0x0c2e" or "3118"
        except ValueError:
            raise ValueError(f"option {key} must be a whole number") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"option {key} must be a whole number")
    return value


def opt_str(options: Mapping[str, object], key: str, default: str | None) -> str | None:
    value = options.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"option {key} must be text")
    return value


def opt_bool(options: Mapping[str, object], key: str, default: bool) -> bool:
    value = options.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"option {key} must be true or false")
    return value


def opt_bytes(options: Mapping[str, object], key: str, default: bytes = b"") -> bytes:
    """Text such as ``"\\u0002"`` (TOML escape) or bytes; encoded as Latin-1."""
    value = options.get(key, default)
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise ValueError(f"option {key} must be text")
    return value.encode("latin-1")


def scan_options(options: Mapping[str, object]) -> ScanOptions:
    """The parse settings shared by every reader kind.

    Keys: ``own_prefixes`` (list of digit strings), ``formats`` (list of symbology names),
    ``msr_layouts`` (list of ``{track, pattern}``), ``lrc`` ("auto", "absent", "required").
    """
    prefixes = options.get("own_prefixes", ())
    if isinstance(prefixes, str) or not isinstance(prefixes, list | tuple):
        raise ValueError("option own_prefixes must be a list of digit strings")
    formats = options.get("formats")
    if formats is not None and (isinstance(formats, str) or not isinstance(formats, list | tuple)):
        raise ValueError("option formats must be a list of names")
    return ScanOptions(
        own_prefixes=tuple(str(p) for p in prefixes),
        formats=symbologies(formats),
        msr_layouts=layouts_from_options(options.get("msr_layouts")),
        lrc=opt_str(options, "lrc", "auto") or "auto",
    )
