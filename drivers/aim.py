"""AIM symbology identifiers (ISO/IEC 15424): ``]`` + code character + modifier.

A scanner configured to "transmit AIM ID" puts three characters in front of every code:
``]Q1`` for a QR code, ``]E0`` for EAN-13/UPC-A, ``]C1`` for GS1-128, and so on. This module
splits that prefix off and maps it to a :class:`~drivers.model.Symbology`; EAN/UPC codes are
normalised to a 13-digit GTIN (UPC-A gains a leading zero, UPC-E is expanded).

Pure and stdlib-only: no I/O, never raises on any input.
"""

from __future__ import annotations

import re

from drivers.model import Symbology

__all__ = ["AIM_CODES", "aim_symbology", "normalise_gtin", "split_aim"]

# Code character -> symbology. Modifiers refine a few of them (see ``aim_symbology``).
AIM_CODES: dict[str, Symbology] = {
    "A": Symbology.CODE39,
    "C": Symbology.CODE128,
    "E": Symbology.EAN13,
    "F": Symbology.CODABAR,
    "I": Symbology.ITF,
    "L": Symbology.PDF417,
    "Q": Symbology.QR,
    "d": Symbology.DATAMATRIX,
    "z": Symbology.AZTEC,
}

# "]" + code character (letters) + one modifier character (digit or letter).
_AIM = re.compile(rb"\][A-Za-z][0-9A-Za-z]")


def aim_symbology(aim: str) -> Symbology:
    """The symbology an AIM identifier such as ``"]E4"`` stands for (UNKNOWN if unlisted)."""
    if len(aim) != 3 or aim[0] != "]":
        return Symbology.UNKNOWN
    code, modifier = aim[1], aim[2]
    if code == "C" and modifier == "1":
        return Symbology.GS1_128  # Code 128 with FNC1 in first position
    if code == "E" and modifier == "4":
        return Symbology.EAN8
    return AIM_CODES.get(code, Symbology.UNKNOWN)


def split_aim(data: bytes) -> tuple[str | None, bytes]:
    """Split a leading AIM identifier off ``data``: ``(aim or None, rest)``."""
    if len(data) >= 3 and _AIM.match(data):
        return data[:3].decode("ascii"), data[3:]
    return None, data


def _gs1_check_digit(body: str) -> str:
    weighted = sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(reversed(body)))
    return str((10 - weighted % 10) % 10)


def _expand_upce(code: str) -> str | None:
    """UPC-E (8 digits: number system, 6 digits, check) -> UPC-A (12 digits), or None."""
    if len(code) != 8 or code[0] not in "01":
        return None
    ns, d, check = code[0], code[1:7], code[7]
    last = d[5]
    if last in "012":
        body = d[0:2] + last + "0000" + d[2:5]
    elif last == "3":
        body = d[0:3] + "00000" + d[3:5]
    elif last == "4":
        body = d[0:4] + "00000" + d[4]
    else:
        body = d[0:5] + "0000" + last
    upca = ns + body
    return upca + check if _gs1_check_digit(upca) == check else None


def normalise_gtin(text: str, symbology: Symbology) -> str:
    """EAN-13/UPC-A/UPC-E as a 13-digit GTIN; anything else is returned unchanged.

    Only called for ``Symbology.EAN13``: 12 digits (UPC-A) gain a leading ``0``; 8 digits with
    a valid UPC-E check digit are expanded. An add-on (``]E3``: 13 + 2 or 5 digits) is kept.
    """
    if symbology is not Symbology.EAN13 or not (text.isascii() and text.isdigit()):
        return text
    if len(text) == 12:
        return "0" + text
    if len(text) == 8:
        upca = _expand_upce(text)
        if upca is not None:
            return "0" + upca
    return text
