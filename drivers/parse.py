"""One entry point from the bytes of a scan or swipe to a :class:`CardRead` or a ParseError.

``parse_scan`` combines the pieces every transport needs:

1. the payment-card guard (:mod:`drivers.payment_guard`) on the whole input -- a bank card
   swiped or typed in becomes a ``CardRead`` with ``rejected="payment_card"`` and *empty*
   ``text`` and ``raw``;
2. an AIM symbology identifier (``]Q1``...) split off, or given by the transport (HID POS);
3. a mag-stripe swipe split into tracks, with the loyalty id taken from the good ones;
4. EAN/UPC normalised to a 13-digit GTIN, and the reader's enabled formats enforced.

It never raises on any bytes: anything it cannot use is a :class:`ParseError`, whose message
is fixed text and never holds scanned data. Nothing here logs scanned data either.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

from drivers import msr
from drivers.aim import aim_symbology, normalise_gtin, split_aim
from drivers.model import CardRead, Symbology
from drivers.payment_guard import carries_payment_card

__all__ = ["ParseError", "ScanOptions", "parse_scan", "parse_with", "symbologies"]

log = logging.getLogger(__name__)

_MESSAGES = {
    "empty": "the scan was empty",
    "too_long": "the scan was too long to be a card",
    "msr_unreadable": "the card could not be read: swipe it again",
    "no_card_id": "this card does not carry a loyalty card number",
    "format_not_enabled": "this kind of barcode is not enabled for this reader",
}

_MSR_SYMBOLOGY = {
    1: Symbology.MSR_TRACK1,
    2: Symbology.MSR_TRACK2,
    3: Symbology.MSR_TRACK3,
}

# Characters removed before the guard looks again: a card number split by control
# characters or NULs must still be found.
_AIM_ANYWHERE = re.compile(r"\][A-Za-z][0-9A-Za-z]")
_CONTROL = {c: None for c in range(32) if c not in (9, 10, 13)} | {127: None}


@dataclass(frozen=True)
class ParseError:
    """A scan that gave no card: ``code`` (snake_case) and a sentence for the cashier.

    Never holds any of the scanned data.
    """

    code: str
    message: str
    source: str
    at: float  # float ok: monotonic seconds


@dataclass(frozen=True)
class ScanOptions:
    """Per-reader parse settings (see :func:`parse_scan` for their meaning)."""

    own_prefixes: tuple[str, ...] = ()
    formats: frozenset[Symbology] | None = None
    msr_layouts: tuple[msr.MsrLayout, ...] = ()
    default_symbology: Symbology = Symbology.UNKNOWN
    max_length: int = 4096
    lrc: str = "auto"
    msr_preference: tuple[int, ...] = (2, 1, 3)
    extra: dict[str, object] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        # Validate the prefixes once, here, so parsing a scan can never fail on config.
        carries_payment_card("", self.own_prefixes)
        if self.lrc not in ("auto", "absent", "required"):
            raise ValueError("lrc must be 'auto', 'absent' or 'required'")


def symbologies(names: Iterable[str | Symbology] | None) -> frozenset[Symbology] | None:
    """Config ``formats = ["qr", "ean13", ...]`` -> a set of symbologies (None: all)."""
    if names is None:
        return None
    if isinstance(names, str):
        raise ValueError("formats must be a list of names, not a string")
    out: set[Symbology] = set()
    for name in names:
        try:
            out.add(Symbology(name))
        except ValueError:
            valid = ", ".join(s.value for s in Symbology)
            raise ValueError(f"unknown format {name!r}; use some of: {valid}") from None
    return frozenset(out)


def _error(code: str, source: str, at: float) -> ParseError:
    return ParseError(code, _MESSAGES[code], source, at)


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # never fails: every byte is a character


def _is_payment(text: str, own_prefixes: Sequence[str]) -> bool:
    """The guard on the text, on it without control characters, and without AIM ids."""
    if carries_payment_card(text, own_prefixes):
        return True
    cleaned = text.translate(_CONTROL)
    if cleaned != text and carries_payment_card(cleaned, own_prefixes):
        return True
    # "]E0" + a PAN glues the identifier's modifier digit to the card number.
    unaimed = _AIM_ANYWHERE.sub(" ", cleaned)
    return unaimed != cleaned and carries_payment_card(unaimed, own_prefixes)


def parse_scan(
    data: bytes,
    source: str,
    *,
    own_prefixes: Sequence[str] = (),
    aim: str | None = None,
    at: float | None = None,  # float ok: monotonic seconds
    formats: Collection[Symbology] | None = None,
    msr_layouts: Sequence[msr.MsrLayout] = (),
    default_symbology: Symbology = Symbology.UNKNOWN,
    max_length: int = 4096,
    lrc: str = "auto",
    msr_preference: Sequence[int] = (2, 1, 3),
) -> CardRead | ParseError:
    """Turn the bytes of one scan (framing removed) into a read or a parse error.

    Args:
      data: the bytes as received, without prefix/suffix framing.
      source: the reader's name, copied into the result.
      own_prefixes: the shop's own card-number ranges, never refused as payment cards.
      aim: the AIM identifier if the transport delivered it separately (HID POS); else one at
        the start of ``data`` is used.
      at: monotonic time of the read (default: now).
      formats: the symbologies this reader accepts (None: all). Reads without an identifier
        (``default_symbology``) and swipes are not filtered.
      msr_layouts: the shop's own mag-stripe layouts (see :class:`drivers.msr.MsrLayout`).
      default_symbology: what a scan without an AIM identifier is reported as.
    """
    when = time.monotonic() if at is None else at
    if len(data) > max_length:
        return _error("too_long", source, when)
    own = tuple(own_prefixes)
    if aim is None:
        aim, body = split_aim(data.lstrip(b" \t\r\n\x00"))
    else:
        body = data
    text = _decode(body)
    swipe_like = aim is None and msr.looks_like_swipe(text)

    if _is_payment(text, own) or (body is not data and _is_payment(_decode(data), own)):
        symbology = Symbology.MSR_TRACK2 if swipe_like else _symbology(aim, default_symbology)
        if text.lstrip().startswith("%"):
            symbology = Symbology.MSR_TRACK1
        log.info("reader %s: payment card refused (data discarded)", source)
        return CardRead(
            text="",
            raw=b"",
            symbology=symbology,
            source=source,
            at=when,
            aim=aim,
            rejected="payment_card",
        )

    text = text.strip(" \t\r\n\x00")
    if not text:
        return _error("empty", source, when)

    if swipe_like:
        swipe = msr.parse_swipe(text, lrc=lrc)
        if not swipe.good:
            log.info("reader %s: swipe unreadable (%d tracks failed)", source, len(swipe.tracks))
            return _error("msr_unreadable", source, when)
        found = msr.loyalty_id(swipe, layouts=msr_layouts, preference=msr_preference)
        if found is None:
            return _error("no_card_id", source, when)
        number, card_id = found
        if carries_payment_card(card_id, own):  # belt and braces: never hand out a PAN
            return CardRead("", b"", _MSR_SYMBOLOGY[number], source, when, None, "payment_card")
        log.debug("reader %s: swipe, card id from track %d", source, number)
        return CardRead(card_id, bytes(data), _MSR_SYMBOLOGY[number], source, when, None, None)

    symbology = _symbology(aim, default_symbology)
    if formats is not None and aim is not None and symbology not in formats:
        return _error("format_not_enabled", source, when)
    text = normalise_gtin(text, symbology)
    log.debug("reader %s: %d bytes, %s", source, len(data), symbology.value)
    return CardRead(text, bytes(data), symbology, source, when, aim, None)


def _symbology(aim: str | None, default: Symbology) -> Symbology:
    return default if aim is None else aim_symbology(aim)


def parse_with(
    options: ScanOptions,
    data: bytes,
    source: str,
    *,
    aim: str | None = None,
    at: float | None = None,  # float ok: monotonic seconds
) -> CardRead | ParseError:
    """:func:`parse_scan` with a reader's :class:`ScanOptions`."""
    return parse_scan(
        data,
        source,
        own_prefixes=options.own_prefixes,
        aim=aim,
        at=at,
        formats=options.formats,
        msr_layouts=options.msr_layouts,
        default_symbology=options.default_symbology,
        max_length=options.max_length,
        lrc=options.lrc,
        msr_preference=options.msr_preference,
    )
