"""Loyalty card codes: ``PREFIX`` + 12-digit serial + 1 Luhn check digit.

A card code looks like ``PL0000001234567``: the shop's prefix (ASCII letters, upper case),
then the serial number as 12 digits, then a check digit computed with the Luhn algorithm over
those 12 digits. The check digit catches every single-digit typing error and almost every
swap of two neighbouring digits, so a mistyped code is refused at the till instead of being
booked on someone else's card.

Pure Python, stdlib only.
"""

from __future__ import annotations

import unicodedata

__all__ = [
    "SERIAL_DIGITS",
    "CardCodeError",
    "check_digit",
    "is_valid_card_code",
    "make_card_code",
    "normalise_card_code",
]

SERIAL_DIGITS = 12
_CODE_DIGITS = SERIAL_DIGITS + 1

# Characters a cashier or a scanner may put between groups of a code; all are removed.
_DASHES = frozenset("-\u2010\u2011\u2012\u2013\u2014\u2212")


class CardCodeError(ValueError):
    """A card code (or a serial) that cannot be a valid card code; the message is one line."""


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _shown(code: str) -> str:
    """A short, printable head of ``code`` for an error message.

    Never the whole text: a scan that is not a card code may be anything, including data
    that must not end up in a log, and a message must stay on one line.
    """
    head = "".join(ch if ch.isprintable() and not ch.isspace() else "?" for ch in code[:4])
    return head + "\u2026" if len(code) > 4 else head


def _check_prefix(prefix: str) -> str:
    if not (prefix and prefix.isascii() and prefix.isalpha()):
        raise ValueError(f"card code prefix must be ASCII letters, got {prefix!r}")
    return prefix.upper()


def _luhn_digit(payload: str) -> str:
    total = 0
    # Double every second digit counting from the right of the payload, starting with the
    # rightmost one: it will sit next to the check digit.
    for index, char in enumerate(reversed(payload)):
        value = ord(char) - 48
        if index % 2 == 0:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return str((10 - total % 10) % 10)


def check_digit(serial12: str) -> str:
    """The Luhn check digit for a 12-digit serial (as a one-character string)."""
    if len(serial12) != SERIAL_DIGITS or not _is_digits(serial12):
        raise CardCodeError(f"a card serial must be exactly {SERIAL_DIGITS} digits")
    return _luhn_digit(serial12)


def make_card_code(prefix: str, serial: int) -> str:
    """The card code for ``serial`` (0 to 10**12 - 1) under ``prefix``, e.g. ``PL0000001234567``."""
    canonical_prefix = _check_prefix(prefix)
    if isinstance(serial, bool) or not isinstance(serial, int):
        raise CardCodeError("a card serial must be an integer")
    if not 0 <= serial < 10**SERIAL_DIGITS:
        raise CardCodeError(f"a card serial must be between 0 and {10**SERIAL_DIGITS - 1}")
    serial12 = f"{serial:0{SERIAL_DIGITS}d}"
    return canonical_prefix + serial12 + _luhn_digit(serial12)


def normalise_card_code(scanned: str, prefix: str) -> str:
    """The canonical card code for what a scanner or a cashier typed.

    Removes whitespace and dashes anywhere, folds compatibility forms (full-width letters and
    digits) and upper-cases; a scan of just the 13 digits gets the prefix added. Raises
    :class:`CardCodeError` with a one-line message for a wrong prefix, a wrong number of
    digits, characters that are not digits, or a wrong check digit.
    """
    canonical_prefix = _check_prefix(prefix)
    text = unicodedata.normalize("NFKC", scanned)
    code = "".join(ch for ch in text if not ch.isspace() and ch not in _DASHES).upper()
    if not code:
        raise CardCodeError("card code is empty")

    if code[0].isdigit():
        digits = code
    elif code.startswith(canonical_prefix):
        digits = code[len(canonical_prefix) :]
    else:
        raise CardCodeError(
            f"card code {_shown(code)} does not start with the prefix {canonical_prefix}"
        )

    if digits and not _is_digits(digits):
        raise CardCodeError(
            f"card code {_shown(code)} must be {canonical_prefix} followed by digits only"
        )
    if len(digits) != _CODE_DIGITS:
        raise CardCodeError(
            f"card code {_shown(code)} has {len(digits)} digits, expected {_CODE_DIGITS}"
        )
    if _luhn_digit(digits[:SERIAL_DIGITS]) != digits[SERIAL_DIGITS]:
        raise CardCodeError(f"card code {_shown(code)} has a wrong check digit")
    return canonical_prefix + digits


def is_valid_card_code(code: str, prefix: str) -> bool:
    """True if ``code`` is exactly a canonical card code under ``prefix``.

    Strict: no whitespace, dashes or lower case (what :func:`make_card_code` returns and what
    is stored). For a raw scan use :func:`normalise_card_code`, which tidies it first.
    """
    canonical_prefix = _check_prefix(prefix)
    if not code.startswith(canonical_prefix):
        return False
    digits = code[len(canonical_prefix) :]
    return (
        len(digits) == _CODE_DIGITS
        and _is_digits(digits)
        and _luhn_digit(digits[:SERIAL_DIGITS]) == digits[SERIAL_DIGITS]
    )
