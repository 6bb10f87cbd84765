"""Payment-card detection: keep card data out of storage and logs (PCI DSS 4.0 req. 3.3.1.1).

A card reader at a till sees more than loyalty cards: a customer may swipe a bank card
through the magnetic-stripe reader, or a cashier may type a card number into the scan field.
Full track data must never be kept after authorisation -- not in the ledger, in logs, in
traces or in crash dumps -- so every scanned string passes through :func:`guard` before it
goes anywhere else.

Detected as payment-card data (unless the PAN starts with one of ``own_prefixes``):

* ISO/IEC 7813 track 1, format B, anywhere in the text:
  ``%B`` PAN(13-19 digits) ``^`` NAME ``^`` YYMM ... (end sentinel ``?`` optional).
  Format code ``B`` *means* "financial card", so no Luhn check is required here.
* ISO/IEC 7813 track 2 anywhere in the text: ``;`` (optional) PAN(13-19) ``=`` YYMM ...,
  when the PAN is Luhn-valid. A track 2 with a non-Luhn PAN is a loyalty/gift track.
* A bare card number: 13-19 digits, optionally grouped by single spaces or dashes, Luhn-valid
  and inside a major network's IIN range (see :func:`_in_major_network`).

Keyboard MSRs send ``%E?`` / ``;E?`` for an unreadable track; those carry no data.

This module is pure and stdlib-only; it imports nothing from ``pos_loyalty``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "PaymentCardRejected",
    "carries_payment_card",
    "guard",
    "luhn_valid",
]

_REFUSED = "payment card data refused: it is never stored or logged"

# Track 1 format B. The character set of track 1 is upper case only, but a keyboard-wedge
# reader with Caps Lock on types "%b...", hence IGNORECASE. Some issuers put spaces inside the
# track-1 PAN, so spaces are allowed there and removed before counting digits. The name field
# is at most 26 characters in ISO 7813; we allow more so a slightly off-spec card still counts.
_TRACK1 = re.compile(r"%B([0-9 ]{13,30})\^[^^]{0,64}\^", re.IGNORECASE)

# Track 2: PAN, field separator, then at least the 4-digit expiry. The start sentinel ';' is
# optional (some readers strip sentinels); the look-behind keeps the PAN from being the tail
# of a longer digit run.
_TRACK2 = re.compile(r"(?<![0-9])([0-9]{13,19})=[0-9]{4}")

# A run of digits, possibly grouped by single spaces or dashes ("4111 1111 1111 1111",
# "4111-1111-1111-1111"). The run must not touch a letter or digit on either side: a loyalty
# code such as "PL4000000000017" carries a Luhn-valid number by construction (its check digit
# is a Luhn digit) and must not be mistaken for a 13-digit Visa number.
_DIGIT_RUN = re.compile(r"(?<![0-9A-Za-z])[0-9]+(?:[ \-][0-9]+)*(?![0-9A-Za-z])")


class PaymentCardRejected(ValueError):
    """Raised by :func:`guard` when the text carries payment-card data.

    The message is fixed and never contains any of the scanned data, so the exception can be
    logged, shown to the cashier and turned into an API error (``code``) safely.
    """

    code = "payment_card_rejected"

    def __init__(self) -> None:
        super().__init__(_REFUSED)

    def __reduce__(self) -> tuple[type[PaymentCardRejected], tuple[()]]:
        # The default reduce passes ``args`` back to ``__init__``, which takes none.
        return (type(self), ())


def luhn_valid(digits: str) -> bool:
    """True if ``digits`` (ASCII digits only, at least 2 of them) passes the Luhn check."""
    if len(digits) < 2 or not (digits.isascii() and digits.isdigit()):
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _ean13_valid(digits: str) -> bool:
    """True if a 13-digit string carries a correct GS1 (EAN-13) check digit."""
    weighted = sum((ord(c) - 48) * (3 if i % 2 else 1) for i, c in enumerate(digits[:12]))
    return (10 - weighted % 10) % 10 == ord(digits[12]) - 48


def _in_major_network(pan: str) -> bool:
    """True if ``pan`` starts inside an IIN range of a major payment network.

    Applied only to *bare* numbers, whatever their length: a product barcode, a gift-card or
    a membership number is often 13-19 digits and Luhn-valid (one number in ten is), so Luhn
    alone would refuse ordinary scans. Track data has its own structure and does not need this.

    Ranges: Visa 4; Mastercard 51-55 and 2221-2720; Amex 34, 37; Discover 6011, 644-649, 65;
    JCB 35; Diners 30, 36, 38, 39; UnionPay 62. Maestro (50, 56-58, 6x) is covered by taking
    the whole of 5 and 6 (ISO/IEC 7812 major-industry identifiers 5 and 6 are banking), and
    Mir is 2200-2204. Being broad here errs on the side of never storing a card number.
    """
    first = pan[0]
    if first in "456":
        return True
    if first == "3":
        return pan[1] in "0456789"  # 30, 34, 35, 36, 37, 38, 39
    if first == "2":
        head = int(pan[:4])
        return 2221 <= head <= 2720 or 2200 <= head <= 2204
    return False


def _own(pan: str, own_prefixes: Sequence[str]) -> bool:
    return any(pan.startswith(prefix) for prefix in own_prefixes)


def _check_prefixes(own_prefixes: Sequence[str]) -> None:
    if isinstance(own_prefixes, str):
        # A bare string would be iterated character by character: "9" and "7" of "97".
        raise TypeError("own_prefixes must be a sequence of digit strings, not a string")
    for prefix in own_prefixes:
        # An empty prefix would exempt every card; a non-digit one can never match a PAN.
        if not (prefix.isascii() and prefix.isdigit()):
            raise ValueError("own_prefixes must be non-empty strings of digits")


def _bare_card_numbers(text: str) -> list[str]:
    """Candidate PANs written as bare (possibly grouped) numbers in ``text``.

    For a grouped run ("0 4111 1111 1111 1111 12/25") every contiguous span of whole groups
    holding 13-19 digits is a candidate, so a PAN followed or preceded by other numbers is
    still found. An ungrouped run longer than 19 digits is some other barcode, not a PAN.
    """
    found: list[str] = []
    for match in _DIGIT_RUN.finditer(text):
        groups = re.split(r"[ \-]", match.group())
        for start in range(len(groups)):
            digits = ""
            for group in groups[start:]:
                digits += group
                if len(digits) > 19:
                    break
                if len(digits) >= 13:
                    found.append(digits)
    return found


def carries_payment_card(text: str, own_prefixes: Sequence[str] = ()) -> bool:
    """True if ``text`` carries payment-card data (see the module docstring for the rules).

    ``own_prefixes`` are the shop's own card-number ranges (digits, e.g. ``("990012",)``):
    a PAN starting with one of them is the shop's own card and is not refused.
    """
    _check_prefixes(own_prefixes)

    for match in _TRACK1.finditer(text):
        pan = match.group(1).replace(" ", "")
        if 13 <= len(pan) <= 19 and not _own(pan, own_prefixes):
            return True

    for match in _TRACK2.finditer(text):
        pan = match.group(1)
        if luhn_valid(pan) and not _own(pan, own_prefixes):
            return True

    for pan in _bare_card_numbers(text):
        if not luhn_valid(pan) or not _in_major_network(pan) or _own(pan, own_prefixes):
            continue
        # A 13-digit number is also the length of an EAN-13 product barcode, and German
        # barcodes (400-440) sit in Visa's range; about one valid EAN-13 in ten is also
        # Luhn-valid. No major network issues 13-digit PANs any more (Visa retired them), so
        # a bare 13-digit number that is a valid EAN-13 is taken as a product barcode.
        if len(pan) == 13 and _ean13_valid(pan):
            continue
        return True

    return False


def guard(text: str, own_prefixes: Sequence[str] = ()) -> str:
    """Return ``text`` unchanged, or raise :class:`PaymentCardRejected` if it carries card data.

    The exception carries no chained context and no copy of the text.
    """
    if carries_payment_card(text, own_prefixes):
        raise PaymentCardRejected() from None
    return text
