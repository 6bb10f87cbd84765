"""Loyalty cards to print and to show on a phone.

* **Code 128** of a card code, as PNG or SVG. The symbol is encoded by zxing-cpp's writer (the
  same package that decodes at the till, so no extra dependency); this module only draws its
  modules.
* **QR** of a card code (the ``qrcode`` package), as PNG or SVG.
* **A printable sheet** of cards: A4, 2 x 5 cards of ID-1 size (85.6 x 54 mm, a bank-card
  size) with cut lines, each with the shop's name, a QR, a Code 128 and the code in clear.
  As SVG (one page per file) or as a multi-page PDF (written here; vector, base-14 font, no
  extra dependency).
* **A signed digital card** for phones (wallet pass, a QR shown on screen): the card code
  signed with the shop's Ed25519 key, so a till verifies it offline with the public key alone.
  Compact text made of QR alphanumeric characters only, so it fits a small QR::

      LC1:PL0000001234567:1A2B3C4D:<103 base32 characters of signature>

  ``LC1`` is the format version, then the code, the id of the signing key (first 4 bytes of
  SHA-256 of its raw public key, hex) and the signature over ``b"pos-loyalty card v1\\0" +
  key id + ":" + code``.

Card codes are made by the app (prefix + 12 digits + Luhn check digit); here a code is just a
string of ASCII letters and digits. Nothing here imports ``pos_loyalty``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from drivers.payment_guard import carries_payment_card

__all__ = [
    "CARD_MM",
    "CardSignatureError",
    "card_sheet_pdf",
    "card_sheet_svg",
    "card_sheets_svg",
    "code128_modules",
    "code128_png",
    "code128_svg",
    "generate_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "public_key_pem",
    "qr_matrix",
    "qr_png",
    "qr_svg",
    "save_private_key",
    "save_public_key",
    "sign_card",
    "verify_card",
]

CARD_MM = (85.6, 53.98)  # ISO/IEC 7810 ID-1
_PAGE_MM = (210.0, 297.0)  # A4 portrait
_COLUMNS, _ROWS = 2, 5
_CODE128_QUIET = 10  # modules of light margin each side (ISO/IEC 15417)
_QR_QUIET = 4  # modules (ISO/IEC 18004)


def _check_code(code: str) -> str:
    if not code or len(code) > 64 or not (code.isascii() and code.isalnum()):
        raise ValueError("a card code must be 1 to 64 ASCII letters or digits")
    if carries_payment_card(code):
        raise ValueError("refused: that looks like a payment card number")
    return code


# --------------------------------------------------------------------------- Code 128


def code128_modules(code: str) -> list[bool]:
    """The Code 128 symbol for ``code`` as modules (True = bar), without quiet zones."""
    import numpy as np
    import zxingcpp

    barcode = zxingcpp.create_barcode(_check_code(code), zxingcpp.BarcodeFormat.Code128)
    row = np.asarray(barcode.to_image(scale=1, add_quiet_zones=False))[0]
    return [bool(v < 128) for v in row]


def _runs(modules: Sequence[bool]) -> list[tuple[int, int]]:
    """(start, width) of each bar."""
    bars: list[tuple[int, int]] = []
    start = -1
    for i, dark in enumerate([*modules, False]):
        if dark and start < 0:
            start = i
        elif not dark and start >= 0:
            bars.append((start, i - start))
            start = -1
    return bars


def _code128_group(code: str, x: float, y: float, module: float, height: float) -> str:
    """SVG rects of the bars, the first bar at ``x`` (quiet zone is the caller's)."""
    rects = "".join(
        f'<rect x="{x + s * module:.3f}" y="{y:.3f}" width="{w * module:.3f}" '
        f'height="{height:.3f}"/>'
        for s, w in _runs(code128_modules(code))
    )
    return f'<g fill="#000">{rects}</g>'


def code128_svg(
    code: str, path: Path | None = None, *, module_mm: float = 0.33, height_mm: float = 12.0
) -> str:
    """SVG (sized in mm) of ``code`` as Code 128 with quiet zones and the code in clear."""
    modules = code128_modules(code)
    width = (len(modules) + 2 * _CODE128_QUIET) * module_mm
    text_mm = 3.0
    total_h = height_mm + text_mm + 2.0
    body = _code128_group(code, _CODE128_QUIET * module_mm, 0.5, module_mm, height_mm)
    svg = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.2f}mm" height="{total_h:.2f}mm"'
        f' viewBox="0 0 {width:.3f} {total_h:.3f}">'
        f'<rect width="100%" height="100%" fill="#fff"/>{body}'
        f'<text x="{width / 2:.3f}" y="{height_mm + 0.5 + text_mm:.3f}" font-family="monospace"'
        f' font-size="{text_mm}" text-anchor="middle">{escape(code)}</text></svg>\n'
    )
    if path is not None:
        Path(path).write_text(svg, encoding="utf-8")
    return svg


def code128_png(
    code: str, path: Path | None = None, *, module_px: int = 3, height_px: int = 80
) -> bytes:
    """PNG of ``code`` as Code 128 (``module_px`` pixels a module, quiet zones included)."""
    if module_px < 1 or height_px < 1:
        raise ValueError("module_px and height_px must be at least 1")
    from PIL import Image

    modules = [False] * _CODE128_QUIET + code128_modules(code) + [False] * _CODE128_QUIET
    row = bytes(0 if dark else 255 for dark in modules for _ in range(module_px))
    image = Image.frombytes("L", (len(row), height_px), row * height_px)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    png = buffer.getvalue()
    if path is not None:
        Path(path).write_bytes(png)
    return png


# --------------------------------------------------------------------------- QR


def qr_matrix(data: str) -> list[list[bool]]:
    """QR modules of ``data`` (error correction M), without the quiet zone."""
    import qrcode
    import qrcode.constants

    if not data:
        raise ValueError("QR data must not be empty")
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=0)
    qr.add_data(data)
    qr.make(fit=True)
    return [[bool(cell) for cell in row] for row in qr.get_matrix()]


def _qr_path(matrix: list[list[bool]], x: float, y: float, module: float) -> str:
    """One SVG path of horizontal runs of dark modules."""
    parts: list[str] = []
    for r, row in enumerate(matrix):
        for start, width in _runs(row):
            parts.append(
                f"M{x + start * module:.3f} {y + r * module:.3f}h{width * module:.3f}"
                f"v{module:.3f}h{-width * module:.3f}z"
            )
    return f'<path fill="#000" d="{"".join(parts)}"/>'


def qr_svg(data: str, path: Path | None = None, *, module_mm: float = 0.8) -> str:
    """SVG (sized in mm) of a QR code for ``data``, with its 4-module quiet zone."""
    matrix = qr_matrix(data)
    size = (len(matrix) + 2 * _QR_QUIET) * module_mm
    svg = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size:.2f}mm" height="{size:.2f}mm"'
        f' viewBox="0 0 {size:.3f} {size:.3f}"><rect width="100%" height="100%" fill="#fff"/>'
        f"{_qr_path(matrix, _QR_QUIET * module_mm, _QR_QUIET * module_mm, module_mm)}</svg>\n"
    )
    if path is not None:
        Path(path).write_text(svg, encoding="utf-8")
    return svg


def qr_png(data: str, path: Path | None = None, *, box_size: int = 10) -> bytes:
    """PNG of a QR code for ``data`` (``box_size`` pixels a module, quiet zone included)."""
    if box_size < 1:
        raise ValueError("box_size must be at least 1 pixel")
    from PIL import Image

    matrix = qr_matrix(data)
    n = len(matrix) + 2 * _QR_QUIET
    light = [False] * _QR_QUIET
    rows = [[False] * n] * _QR_QUIET + [light + r + light for r in matrix]
    rows += [[False] * n] * _QR_QUIET
    raw = b"".join(
        bytes(0 if dark else 255 for dark in row for _ in range(box_size)) * box_size
        for row in rows
    )
    image = Image.frombytes("L", (n * box_size, n * box_size), raw)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    png = buffer.getvalue()
    if path is not None:
        Path(path).write_bytes(png)
    return png


# --------------------------------------------------------------------------- card layout

# Everything in mm, relative to a card's top-left corner.
_MARGIN = 4.0
_QR_SIZE = 24.0  # including its quiet zone
_BAR_Y, _BAR_H = 33.0, 11.0


def _bar_module(code: str) -> tuple[list[bool], float]:
    modules = code128_modules(code)
    room = CARD_MM[0] - 2 * _MARGIN + 2 * 2.0  # quiet zones may use the card's margin
    module = min(0.33, room / (len(modules) + 2 * _CODE128_QUIET))
    return modules, module


def _card_svg(code: str, shop: str, x: float, y: float, qr_payload: str | None) -> str:
    w, h = CARD_MM
    parts = [
        f'<g transform="translate({x:.3f} {y:.3f})">',
        f'<rect width="{w}" height="{h}" rx="3" fill="#fff" stroke="#bbb" stroke-width="0.2"/>',
        f'<text x="{_MARGIN}" y="{_MARGIN + 5}" font-family="sans-serif" font-size="5"'
        f' font-weight="bold">{escape(shop)}</text>',
        f'<text x="{_MARGIN}" y="{_MARGIN + 10}" font-family="sans-serif" font-size="3">'
        "Loyalty card</text>",
    ]
    matrix = qr_matrix(qr_payload or code)
    module = _QR_SIZE / (len(matrix) + 2 * _QR_QUIET)
    qx, qy = w - _MARGIN - _QR_SIZE + _QR_QUIET * module, 2.0 + _QR_QUIET * module
    parts.append(_qr_path(matrix, qx, qy, module))
    modules, bm = _bar_module(code)
    bar_x = (w - len(modules) * bm) / 2
    parts.append(
        '<g fill="#000">'
        + "".join(
            f'<rect x="{bar_x + s * bm:.3f}" y="{_BAR_Y}" width="{n * bm:.3f}" height="{_BAR_H}"/>'
            for s, n in _runs(modules)
        )
        + "</g>"
    )
    parts.append(
        f'<text x="{w / 2:.3f}" y="{_BAR_Y + _BAR_H + 4:.3f}" font-family="monospace"'
        f' font-size="3.2" text-anchor="middle">{escape(code)}</text></g>'
    )
    return "".join(parts)


def _positions() -> list[tuple[float, float]]:
    w, h = CARD_MM
    left = (_PAGE_MM[0] - _COLUMNS * w) / 2
    top = (_PAGE_MM[1] - _ROWS * h) / 2
    return [(left + c * w, top + r * h) for r in range(_ROWS) for c in range(_COLUMNS)]


def _pages(codes: Sequence[str]) -> list[Sequence[str]]:
    per = _COLUMNS * _ROWS
    return [codes[i : i + per] for i in range(0, len(codes), per)]


def card_sheet_svg(
    codes: Sequence[str], shop_name: str, *, qr_payloads: Sequence[str] | None = None
) -> str:
    """One A4 page (SVG, mm) with up to 10 cards. ``qr_payloads`` replace the QR contents
    (e.g. signed payloads from :func:`sign_card`); the Code 128 always holds the code."""
    codes = [_check_code(c) for c in codes]
    if not 1 <= len(codes) <= _COLUMNS * _ROWS:
        raise ValueError(f"a sheet holds 1 to {_COLUMNS * _ROWS} cards")
    if qr_payloads is not None and len(qr_payloads) != len(codes):
        raise ValueError("one QR payload per code")
    pw, ph = _PAGE_MM
    cards = "".join(
        _card_svg(code, shop_name, x, y, qr_payloads[i] if qr_payloads else None)
        for i, (code, (x, y)) in enumerate(zip(codes, _positions(), strict=False))
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{pw}mm" height="{ph}mm"'
        f' viewBox="0 0 {pw} {ph}"><title>{escape(shop_name)} loyalty cards</title>'
        f'<rect width="100%" height="100%" fill="#fff"/>{cards}</svg>\n'
    )


def card_sheets_svg(
    codes: Sequence[str], shop_name: str, *, qr_payloads: Sequence[str] | None = None
) -> list[str]:
    """As many A4 SVG pages as ``codes`` need (10 cards a page)."""
    pages = _pages(list(codes))
    payload_pages = _pages(list(qr_payloads)) if qr_payloads is not None else [None] * len(pages)
    return [
        card_sheet_svg(page, shop_name, qr_payloads=pp)
        for page, pp in zip(pages, payload_pages, strict=True)
    ]


# --------------------------------------------------------------------------- PDF

_PT = 72 / 25.4  # points per mm


def _pdf_text(text: str) -> str:
    latin = text.encode("cp1252", errors="replace").decode("latin-1")
    return latin.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _pdf_card(code: str, shop: str, x: float, y: float, qr_payload: str | None) -> list[str]:
    """PDF drawing operators for one card; PDF's y axis points up, hence ``flip``."""
    w, h = CARD_MM
    page_h = _PAGE_MM[1]

    def flip(ym: float) -> float:
        return (page_h - y - ym) * _PT

    ops = ["q 0.73 G 0.57 w", f"{x * _PT:.2f} {flip(h):.2f} {w * _PT:.2f} {h * _PT:.2f} re S Q"]
    ops.append(
        f"BT /F2 {5 * _PT:.2f} Tf {(x + _MARGIN) * _PT:.2f} {flip(_MARGIN + 5):.2f} Td "
        f"({_pdf_text(shop)}) Tj ET"
    )
    ops.append(
        f"BT /F1 {3 * _PT:.2f} Tf {(x + _MARGIN) * _PT:.2f} {flip(_MARGIN + 10):.2f} Td "
        "(Loyalty card) Tj ET"
    )
    matrix = qr_matrix(qr_payload or code)
    module = _QR_SIZE / (len(matrix) + 2 * _QR_QUIET)
    qx, qy = x + w - _MARGIN - _QR_SIZE + _QR_QUIET * module, 2.0 + _QR_QUIET * module
    for r, row in enumerate(matrix):
        for s, n in _runs(row):
            ops.append(
                f"{(qx + s * module) * _PT:.2f} {flip(qy + (r + 1) * module):.2f} "
                f"{n * module * _PT:.2f} {module * _PT:.2f} re"
            )
    modules, bm = _bar_module(code)
    bx = x + (w - len(modules) * bm) / 2
    for s, n in _runs(modules):
        ops.append(
            f"{(bx + s * bm) * _PT:.2f} {flip(_BAR_Y + _BAR_H):.2f} {n * bm * _PT:.2f} "
            f"{_BAR_H * _PT:.2f} re"
        )
    ops.append("f")
    text_w = len(code) * 0.6 * 3.2  # Courier: 600/1000 em
    ops.append(
        f"BT /F3 {3.2 * _PT:.2f} Tf {(x + (w - text_w) / 2) * _PT:.2f} "
        f"{flip(_BAR_Y + _BAR_H + 4):.2f} Td ({_pdf_text(code)}) Tj ET"
    )
    return ops


def card_sheet_pdf(
    codes: Sequence[str],
    shop_name: str,
    path: Path | None = None,
    *,
    qr_payloads: Sequence[str] | None = None,
) -> bytes:
    """A multi-page A4 PDF of cards (10 a page); also written to ``path`` when given."""
    codes = [_check_code(c) for c in codes]
    if not codes:
        raise ValueError("no card codes to print")
    if qr_payloads is not None and len(qr_payloads) != len(codes):
        raise ValueError("one QR payload per code")
    objects: list[bytes] = []  # object n is objects[n - 1]

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in below
    pages_obj = add(b"")
    fonts = [
        add(b"<< /Type /Font /Subtype /Type1 /BaseFont /%s /Encoding /WinAnsiEncoding >>" % f)
        for f in (b"Helvetica", b"Helvetica-Bold", b"Courier")
    ]
    resources = b"<< /Font << /F1 %d 0 R /F2 %d 0 R /F3 %d 0 R >> >>" % tuple(fonts)
    kids: list[int] = []
    pw, ph = (v * _PT for v in _PAGE_MM)
    per = _COLUMNS * _ROWS
    for p, page in enumerate(_pages(codes)):
        ops: list[str] = []
        for i, (code, (x, y)) in enumerate(zip(page, _positions(), strict=False)):
            payload = qr_payloads[p * per + i] if qr_payloads else None
            ops += _pdf_card(code, shop_name, x, y, payload)
        stream = zlib.compress("\n".join(ops).encode("latin-1"))
        content = add(
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(stream), stream)
        )
        kids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %.2f %.2f] /Resources %s "
                b"/Contents %d 0 R >>" % (pages_obj, pw, ph, resources, content)
            )
        )
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_obj
    objects[pages_obj - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids),
        len(kids),
    )
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (n, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        catalog,
        xref,
    )
    pdf = bytes(out)
    if path is not None:
        Path(path).write_bytes(pdf)
    return pdf


# --------------------------------------------------------------------------- signed cards

_VERSION = "LC1"
_DOMAIN = b"pos-loyalty card v1\x00"


class CardSignatureError(ValueError):
    """A digital card payload that is malformed, altered, or signed by an unknown key."""


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def key_id(public_key: Ed25519PublicKey) -> str:
    """8 hex digits (upper case) naming a public key: SHA-256 of its raw bytes, first 4."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:8].upper()


def _message(kid: str, code: str) -> bytes:
    return _DOMAIN + f"{kid}:{code}".encode("ascii")


def sign_card(code: str, private_key: Ed25519PrivateKey) -> str:
    """The signed payload for ``code``: QR-alphanumeric text, about 130 characters."""
    _check_code(code)
    code = code.upper()  # QR alphanumeric mode has no lower case
    kid = key_id(private_key.public_key())
    signature = private_key.sign(_message(kid, code))
    sig = base64.b32encode(signature).decode("ascii").rstrip("=")
    return f"{_VERSION}:{code}:{kid}:{sig}"


def verify_card(payload: str, public_keys: Iterable[Ed25519PublicKey]) -> str:
    """The card code in ``payload`` if one of ``public_keys`` signed it exactly as it is.

    Raises :class:`CardSignatureError` (a fixed, data-free message) otherwise.
    """
    parts = payload.strip().split(":")
    if len(parts) != 4 or parts[0] != _VERSION:
        raise CardSignatureError("not a signed loyalty card")
    _, code, kid, sig = parts
    if not (
        code and len(code) <= 64 and code.isascii() and code.isalnum() and code == code.upper()
    ):
        raise CardSignatureError("not a signed loyalty card")
    if len(sig) != 103:
        raise CardSignatureError("not a signed loyalty card")
    try:
        signature = base64.b32decode(sig + "=" * (-len(sig) % 8), casefold=False)
    except (binascii.Error, ValueError):
        raise CardSignatureError("not a signed loyalty card") from None
    if base64.b32encode(signature).decode("ascii").rstrip("=") != sig:
        raise CardSignatureError("not a signed loyalty card")  # non-canonical encoding
    for public_key in public_keys:
        if key_id(public_key) != kid:
            continue
        try:
            public_key.verify(signature, _message(kid, code))
        except InvalidSignature:
            raise CardSignatureError("the card's signature does not match: refused") from None
        return code
    raise CardSignatureError("the card was signed by a key this till does not know")


def save_private_key(
    key: Ed25519PrivateKey, path: Path, *, passphrase: bytes | None = None
) -> None:
    """PEM (PKCS#8), readable by the owner only; refuses to overwrite an existing file."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def load_private_key(path: Path, *, passphrase: bytes | None = None) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), passphrase)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def save_public_key(key: Ed25519PublicKey, path: Path) -> None:
    Path(path).write_bytes(public_key_pem(key))


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return key
