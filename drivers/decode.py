"""Barcodes and QR codes in still images and camera frames -> :class:`CardRead` values.

Two decoders, in order:

1. **zxing-cpp** (PyPI ``zxing-cpp``, module ``zxingcpp``): the default. It read the most QR
   photos in the project's measurements and is fast when restricted to the formats a shop
   uses. In *frame* mode (a webcam) rotation and inversion are off, which is what keeps a
   1280x720 frame well under 16 ms on one core.
2. **pyzbar** (Debian ``libzbar0``): the second decoder. On EAN/UPC photos it finds codes the
   first one misses (and the other way round). It costs several times more than zxing-cpp, so
   on camera frames it runs only when zxing-cpp found nothing *and* its time budget allows
   (by default at most a tenth of the wall time and at most every 0.5 s) -- never on every
   empty frame. For still images (:func:`decode_image`) both decoders run, thoroughly.

OpenCV's own QR detector is not used: it read far fewer photos, and its ``detectAndDecode``
raises on a payload that is not UTF-8.

Every result passes the payment-card guard: a code that carries payment-card data comes out
as a ``CardRead`` with ``rejected="payment_card"`` and empty ``text``/``raw`` -- the data is
never kept, printed or logged.

Symbologies are normalised: EAN-13, UPC-A and UPC-E all come out as :attr:`Symbology.EAN13`
with a 13-digit GTIN text (``036000291452`` -> ``0036000291452``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from drivers.model import CardRead, Symbology
from drivers.payment_guard import carries_payment_card

__all__ = [
    "DEFAULT_FORMATS",
    "SUPPORTED_FORMATS",
    "DecodeError",
    "FrameDecoder",
    "decode_image",
    "decode_file",
    "normalise_gtin",
    "parse_formats",
]

log = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]

#: What a webcam reader looks for unless configured otherwise: QR, EAN/UPC, Code 128, Code 39.
DEFAULT_FORMATS: tuple[Symbology, ...] = (
    Symbology.QR,
    Symbology.EAN13,
    Symbology.EAN8,
    Symbology.CODE128,
    Symbology.CODE39,
)

# Symbology -> zxing-cpp format names (resolved lazily: importing this module stays cheap).
_ZXING_NAMES: dict[Symbology, tuple[str, ...]] = {
    Symbology.QR: ("QRCode",),
    Symbology.EAN13: ("EAN13", "UPCA", "UPCE"),
    Symbology.EAN8: ("EAN8",),
    Symbology.CODE128: ("Code128",),
    Symbology.GS1_128: ("Code128",),
    Symbology.CODE39: ("Code39",),
    Symbology.ITF: ("ITF",),
    Symbology.CODABAR: ("Codabar",),
    Symbology.DATAMATRIX: ("DataMatrix",),
    Symbology.PDF417: ("PDF417",),
    Symbology.AZTEC: ("Aztec",),
}
SUPPORTED_FORMATS: tuple[Symbology, ...] = tuple(_ZXING_NAMES)

# Symbology -> pyzbar ZBarSymbol names (pyzbar has no DataMatrix, Aztec or PDF417 reader).
_ZBAR_NAMES: dict[Symbology, tuple[str, ...]] = {
    Symbology.QR: ("QRCODE",),
    Symbology.EAN13: ("EAN13", "UPCA", "UPCE"),
    Symbology.EAN8: ("EAN8",),
    Symbology.CODE128: ("CODE128",),
    Symbology.GS1_128: ("CODE128",),
    Symbology.CODE39: ("CODE39",),
    Symbology.ITF: ("I25",),
    Symbology.CODABAR: ("CODABAR",),
}

# The AIM identifier a scanner would send for each symbology (used when the decoder gives none).
_DEFAULT_AIM: dict[Symbology, str] = {
    Symbology.QR: "]Q1",
    Symbology.EAN13: "]E0",
    Symbology.EAN8: "]E4",
    Symbology.CODE128: "]C0",
    Symbology.GS1_128: "]C1",
    Symbology.CODE39: "]A0",
    Symbology.ITF: "]I0",
    Symbology.CODABAR: "]F0",
}

# Aliases accepted in configuration ("formats = ["qr", "ean", "code128"]").
_ALIASES: dict[str, Symbology] = {
    "qr": Symbology.QR,
    "qrcode": Symbology.QR,
    "ean": Symbology.EAN13,
    "ean13": Symbology.EAN13,
    "upc": Symbology.EAN13,
    "upca": Symbology.EAN13,
    "upc-a": Symbology.EAN13,
    "ean8": Symbology.EAN8,
    "code128": Symbology.CODE128,
    "gs1-128": Symbology.GS1_128,
    "code39": Symbology.CODE39,
    "itf": Symbology.ITF,
    "codabar": Symbology.CODABAR,
    "datamatrix": Symbology.DATAMATRIX,
    "pdf417": Symbology.PDF417,
    "aztec": Symbology.AZTEC,
}


class DecodeError(ValueError):
    """An image that cannot be read at all (missing file, not an image). One-line message."""


def parse_formats(names: Iterable[str | Symbology]) -> tuple[Symbology, ...]:
    """Configured format names (``"qr"``, ``"ean"``, ``"code128"``...) -> symbologies.

    Raises ``ValueError`` naming the first unknown one.
    """
    out: list[Symbology] = []
    for name in names:
        sym = name if isinstance(name, Symbology) else _ALIASES.get(name.strip().lower())
        if sym is None or sym not in _ZXING_NAMES:
            known = ", ".join(sorted(_ALIASES))
            raise ValueError(f"unknown barcode format {str(name)!r} (known: {known})")
        if sym not in out:
            out.append(sym)
    if not out:
        raise ValueError("at least one barcode format is needed")
    return tuple(out)


# --------------------------------------------------------------------------- normalisation


def _gs1_check_ok(digits: str) -> bool:
    body, check = digits[:-1], digits[-1]
    weighted = sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(reversed(body)))
    return (10 - weighted % 10) % 10 == int(check)


def _upce_to_upca(upce: str) -> str:
    """Expand an 8-digit UPC-E (number system, 6 digits, check) to the 12-digit UPC-A."""
    ns, d, check = upce[0], upce[1:7], upce[7]
    last = d[5]
    if last in "012":
        body = d[0:2] + last + "0000" + d[2:5]
    elif last == "3":
        body = d[0:3] + "00000" + d[3:5]
    elif last == "4":
        body = d[0:4] + "00000" + d[4]
    else:
        body = d[0:5] + "0000" + last
    return ns + body + check


def normalise_gtin(text: str) -> str | None:
    """EAN-13, UPC-A (12 digits) or UPC-E (8 digits starting 0/1) -> a 13-digit GTIN.

    Returns None when ``text`` is none of these or its check digit is wrong.
    """
    if not (text.isascii() and text.isdigit()):
        return None
    if len(text) == 8 and text[0] in "01":
        text = _upce_to_upca(text)
    if len(text) == 12:
        text = "0" + text
    if len(text) != 13 or not _gs1_check_ok(text):
        return None
    return text


def _normalise(sym: Symbology, text: str, raw: bytes) -> tuple[Symbology, str, bytes] | None:
    if sym is Symbology.EAN13:
        gtin = normalise_gtin(text)
        if gtin is None:
            return None
        return sym, gtin, gtin.encode("ascii")
    return sym, text, raw


# --------------------------------------------------------------------------- decoders


@dataclass(frozen=True)
class _Hit:
    symbology: Symbology
    text: str
    raw: bytes
    aim: str | None
    decoder: str


def _bytes_to_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class _Zxing:
    """zxing-cpp restricted to a set of formats."""

    def __init__(self, formats: Sequence[Symbology]) -> None:
        import zxingcpp

        self._z = zxingcpp
        names = sorted({n for f in formats for n in _ZXING_NAMES[f]})
        self.formats = zxingcpp.BarcodeFormats([getattr(zxingcpp.BarcodeFormat, n) for n in names])
        self._want_gs1 = Symbology.GS1_128 in formats
        self._want_128 = Symbology.CODE128 in formats

    def _symbology(self, fmt: Any, aim: str) -> Symbology | None:
        z = self._z.BarcodeFormat
        if fmt == z.QRCode:
            return Symbology.QR
        if fmt in (z.EAN13, z.UPCA, z.UPCE):
            return Symbology.EAN13
        if fmt == z.EAN8:
            return Symbology.EAN8
        if fmt == z.Code128:
            if aim.startswith("]C1"):
                return Symbology.GS1_128 if self._want_gs1 or not self._want_128 else None
            return Symbology.CODE128 if self._want_128 else None
        for sym in (
            Symbology.CODE39,
            Symbology.ITF,
            Symbology.CODABAR,
            Symbology.DATAMATRIX,
            Symbology.PDF417,
            Symbology.AZTEC,
        ):
            if fmt == getattr(z, _ZXING_NAMES[sym][0]):
                return sym
        return None

    def decode(self, image: Image, *, thorough: bool) -> list[_Hit]:
        z = self._z
        found = z.read_barcodes(
            image,
            formats=self.formats,
            try_rotate=thorough,
            try_invert=thorough,
            try_downscale=True,
            text_mode=z.TextMode.Plain,
        )
        hits: list[_Hit] = []
        for barcode in found:
            aim = barcode.symbology_identifier or ""
            sym = self._symbology(barcode.format, aim)
            if sym is None:
                continue
            raw = bytes(barcode.bytes)
            hits.append(_Hit(sym, barcode.text, raw, aim or None, "zxing-cpp"))
        return hits


class _Zbar:
    """pyzbar (libzbar) restricted to the formats it knows among the configured ones."""

    def __init__(self, formats: Sequence[Symbology]) -> None:
        from pyzbar import pyzbar

        self._pyzbar = pyzbar
        names = sorted({n for f in formats for n in _ZBAR_NAMES.get(f, ())})
        self.symbols = [getattr(pyzbar.ZBarSymbol, n) for n in names]
        self._want_gs1 = Symbology.GS1_128 in formats and Symbology.CODE128 not in formats

    def decode(self, gray: Image) -> list[_Hit]:
        if not self.symbols:
            return []
        hits: list[_Hit] = []
        for result in self._pyzbar.decode(gray, symbols=self.symbols):
            kind = result.type
            raw = bytes(result.data)
            if kind == "QRCODE":
                sym = Symbology.QR
            elif kind in ("EAN13", "UPCA", "UPCE"):
                sym = Symbology.EAN13
            elif kind == "EAN8":
                sym = Symbology.EAN8
            elif kind == "CODE128":
                sym = Symbology.GS1_128 if self._want_gs1 else Symbology.CODE128
            elif kind == "CODE39":
                sym = Symbology.CODE39
            elif kind == "I25":
                sym = Symbology.ITF
            elif kind == "CODABAR":
                sym = Symbology.CODABAR
            else:
                continue
            hits.append(_Hit(sym, _bytes_to_text(raw), raw, _DEFAULT_AIM.get(sym), "pyzbar"))
        return hits


def _gray(image: Image) -> Image:
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    import cv2

    code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return np.asarray(cv2.cvtColor(image, code), dtype=np.uint8)


@dataclass
class DecoderStats:
    """Counters, for benchmarks and diagnostics (no decoded data)."""

    frames: int = 0
    zxing_hits: int = 0
    fallback_runs: int = 0
    fallback_hits: int = 0
    fallback_seconds: float = 0.0  # float ok: durations


@dataclass
class FrameDecoder:
    """Decodes frames or images into ``CardRead`` values.

    Args:
      formats: the symbologies to look for (default :data:`DEFAULT_FORMATS`).
      fallback: use pyzbar as the second decoder (on a budget in frame mode).
      fallback_share: in frame mode, the largest share of wall time pyzbar may use.
      fallback_interval: in frame mode, the least time between two pyzbar runs, seconds.
      own_prefixes: the shop's own card-number ranges, passed to the payment-card guard.
      clock: monotonic clock (injectable for tests).
    """

    formats: Sequence[Symbology] = DEFAULT_FORMATS
    fallback: bool = True
    fallback_share: float = 0.1  # float ok: a ratio of time
    fallback_interval: float = 0.5  # float ok: seconds
    own_prefixes: Sequence[str] = ()
    clock: Callable[[], float] = time.monotonic
    stats: DecoderStats = field(default_factory=DecoderStats)

    def __post_init__(self) -> None:
        self.formats = parse_formats(self.formats)
        self._zxing = _Zxing(self.formats)
        self._zbar: _Zbar | None = None
        if self.fallback:
            try:
                self._zbar = _Zbar(self.formats)
            except (ImportError, OSError) as exc:  # libzbar0 missing: run on zxing-cpp alone
                log.warning("pyzbar unavailable, second decoder off: %s", type(exc).__name__)
        self._next_fallback = 0.0

    # -- public -------------------------------------------------------------------------
    def decode_frame(self, frame: Image, *, source: str = "webcam") -> list[CardRead]:
        """One camera frame: fast zxing-cpp; pyzbar only on an empty result, within budget."""
        self.stats.frames += 1
        gray = _gray(frame)
        hits = self._zxing.decode(gray, thorough=False)
        if hits:
            self.stats.zxing_hits += 1
        elif self._zbar is not None and self.clock() >= self._next_fallback:
            start = self.clock()
            hits = self._zbar.decode(gray)
            end = self.clock()
            cost = end - start
            self.stats.fallback_runs += 1
            self.stats.fallback_seconds += cost
            if hits:
                self.stats.fallback_hits += 1
            # Keep pyzbar's share of the time under fallback_share: after a run costing
            # ``cost``, wait cost * (1 - share) / share, and at least fallback_interval.
            share = min(max(self.fallback_share, 0.01), 1.0)
            wait = max(self.fallback_interval, cost * (1.0 - share) / share)
            self._next_fallback = end + wait
        return self._reads(hits, source)

    def decode_image(self, image: Image, *, source: str = "image") -> list[CardRead]:
        """A still image: both decoders, rotation and inversion on; results merged."""
        gray = _gray(image)
        hits = self._zxing.decode(gray, thorough=True)
        if self._zbar is not None:
            hits += self._zbar.decode(gray)
        return self._reads(hits, source)

    # -- internals ----------------------------------------------------------------------
    def _reads(self, hits: list[_Hit], source: str) -> list[CardRead]:
        now = time.monotonic()
        out: list[CardRead] = []
        seen: set[tuple[Symbology, str]] = set()
        for hit in hits:
            norm = _normalise(hit.symbology, hit.text, hit.raw)
            if norm is None:
                continue
            sym, text, raw = norm
            if (sym, text) in seen:
                continue
            seen.add((sym, text))
            if carries_payment_card(text, self.own_prefixes):
                out.append(CardRead("", b"", sym, source, now, hit.aim, rejected="payment_card"))
            else:
                out.append(CardRead(text, raw, sym, source, now, hit.aim))
        return out


def decode_image(
    image: Image,
    *,
    formats: Sequence[Symbology] = DEFAULT_FORMATS,
    own_prefixes: Sequence[str] = (),
    source: str = "image",
) -> list[CardRead]:
    """The codes in one still image (BGR, BGRA or grayscale ``uint8`` array)."""
    decoder = FrameDecoder(formats=formats, own_prefixes=own_prefixes)
    return decoder.decode_image(image, source=source)


def decode_file(
    path: str | Path,
    *,
    formats: Sequence[Symbology] = DEFAULT_FORMATS,
    own_prefixes: Sequence[str] = (),
    decoder: FrameDecoder | None = None,
) -> list[CardRead]:
    """The codes in an image file (PNG, JPEG, ... anything OpenCV reads).

    Raises :class:`DecodeError` when the file is missing or is not an image.
    """
    import cv2

    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise DecodeError(f"{p}: cannot read ({exc.strerror or type(exc).__name__})") from None
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise DecodeError(f"{p}: not an image OpenCV can read")
    image = np.asarray(decoded, dtype=np.uint8)
    if decoder is None:
        decoder = FrameDecoder(formats=formats, own_prefixes=own_prefixes)
    return decoder.decode_image(image, source=str(p))
