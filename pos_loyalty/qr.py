"""QR rendering of card codes: PNG (printing, the API), SVG (web, print) and terminal text.

An adapter over the ``qrcode`` package. Error correction level M (15 %) survives a scuffed
card or a cracked phone screen and keeps a 15-character card code in a version-1 symbol.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import qrcode
import qrcode.constants
import qrcode.image.svg

__all__ = ["qr_png", "qr_svg", "qr_terminal"]

_QUIET_ZONE = 4  # modules of light margin in PNG and SVG, as ISO/IEC 18004 asks
_TERMINAL_QUIET_ZONE = 2  # narrower on a terminal, where the background surrounds it anyway


def _qr(data: str, *, border: int, box_size: int = 10) -> Any:
    if not data:
        raise ValueError("QR data must not be empty")
    code = qrcode.QRCode(
        error_correction=qrcode.constants.ERROR_CORRECT_M,
        box_size=box_size,
        border=border,
    )
    code.add_data(data)
    code.make(fit=True)
    return code


def qr_png(data: str, path: Path | None = None, *, box_size: int = 10) -> bytes:
    """PNG bytes of a QR code for ``data``; also written to ``path`` when given."""
    if box_size < 1:
        raise ValueError("box_size must be at least 1 pixel")
    image = _qr(data, border=_QUIET_ZONE, box_size=box_size).make_image()
    buffer = io.BytesIO()
    image.save(buffer, kind="PNG")
    png = buffer.getvalue()
    if path is not None:
        Path(path).write_bytes(png)
    return png


def qr_svg(data: str, path: Path | None = None) -> str:
    """SVG text (one ``<path>``, sized in mm) of a QR code for ``data``; also written to path."""
    image = _qr(data, border=_QUIET_ZONE).make_image(image_factory=qrcode.image.svg.SvgPathImage)
    buffer = io.BytesIO()
    image.save(buffer)
    svg = buffer.getvalue().decode("utf-8")
    if path is not None:
        Path(path).write_text(svg, encoding="utf-8")
    return svg


# (top module dark, bottom module dark) -> character. Ink is the dark module: this is meant
# for a dark-on-light terminal (or paper); on a light-on-dark terminal the code is inverted,
# which phone cameras often, but not always, read.
_HALF_BLOCKS = {
    (False, False): " ",
    (True, False): "\u2580",  # ▀ upper half block
    (False, True): "\u2584",  # ▄ lower half block
    (True, True): "\u2588",  # █ full block
}


def qr_terminal(data: str) -> str:
    """Terminal text of a QR code for ``data``: two module rows per text line.

    Uses only ``▀``, ``▄``, ``█`` and space, with a 2-module quiet zone on every side. Every
    line has the same width (trailing spaces kept) and ends with a newline. A terminal cell is
    about twice as tall as it is wide, so half a cell per module gives square modules.
    """
    qr = _qr(data, border=0)
    inner: list[list[bool]] = [[bool(cell) for cell in row] for row in qr.get_matrix()]
    size = len(inner) + 2 * _TERMINAL_QUIET_ZONE
    light_row = [False] * size
    pad = [False] * _TERMINAL_QUIET_ZONE
    matrix = (
        [light_row] * _TERMINAL_QUIET_ZONE
        + [pad + row + pad for row in inner]
        + [light_row] * _TERMINAL_QUIET_ZONE
    )
    if len(matrix) % 2:
        matrix.append(light_row)  # an odd count of rows: the last line's lower half is light
    lines = []
    for top, bottom in zip(matrix[0::2], matrix[1::2], strict=True):
        lines.append("".join(_HALF_BLOCKS[(t, b)] for t, b in zip(top, bottom, strict=True)))
    return "\n".join(lines) + "\n"
