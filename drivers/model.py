"""What every reader emits: plain values, no application types (drivers never import the app).

``CardRead`` is one scan or swipe; ``ReaderStatus`` is a change in a reader's health. Both
are immutable. ``raw`` holds the bytes as the device sent them, except for a rejected payment
card, whose data is never kept (``raw`` and ``text`` are then empty).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Symbology(str, Enum):
    """Normalised symbologies. EAN-13 and UPC-A are both reported as a 13-digit GTIN."""

    QR = "qr"
    EAN13 = "ean13"
    EAN8 = "ean8"
    CODE128 = "code128"
    GS1_128 = "gs1-128"
    CODE39 = "code39"
    ITF = "itf"
    CODABAR = "codabar"
    DATAMATRIX = "datamatrix"
    PDF417 = "pdf417"
    AZTEC = "aztec"
    MSR_TRACK1 = "msr-track1"
    MSR_TRACK2 = "msr-track2"
    MSR_TRACK3 = "msr-track3"
    KEYBOARD = "keyboard"  # typed by hand or by a wedge scanner that sends no identifier
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class CardRead:
    """One read from one reader.

    Attributes:
      text: the decoded text (a loyalty card code, a track's content...).
      raw: the bytes as received (framing removed); empty for a rejected payment card.
      symbology: the normalised symbology.
      aim: the AIM identifier (e.g. "]Q1") when the device sent one, else None.
      source: the reader's configured name (e.g. "counter-scanner").
      at: monotonic time of the read in seconds (``time.monotonic()``).  # float ok: a clock
      rejected: None, or why the read is refused ("payment_card"); its data is then empty.
    """

    text: str
    raw: bytes
    symbology: Symbology
    source: str
    at: float  # float ok: monotonic seconds, not money
    aim: str | None = None
    rejected: str | None = None


class ReaderState(str, Enum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    RECONNECTING = "reconnecting"
    ERROR = "error"


@dataclass(frozen=True)
class ReaderStatus:
    """A reader's state changed. ``message`` is for a person (never holds scanned data)."""

    source: str
    state: ReaderState
    message: str
    at: float  # float ok: monotonic seconds
