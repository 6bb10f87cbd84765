"""QR rendering: every output decodes back to the data with a real decoder."""

from __future__ import annotations

import ctypes.util
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from pos_loyalty.qr import qr_png, qr_svg, qr_terminal

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SAMPLES = ["PL0000001234566", "https://loyalty.example/c/PL0000001234566", "Café ☕ 42"]


def _cv2_decode(gray: NDArray[np.uint8]) -> str:
    """Decode one QR code with OpenCV; bytes variant, so non-ASCII payloads do not raise."""
    payload, points, _ = cv2.QRCodeDetector().detectAndDecodeBytes(gray)
    assert points is not None, "OpenCV found no QR code"
    return bytes(payload).decode("utf-8")


def _png_to_gray(png: bytes) -> NDArray[np.uint8]:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("L"), dtype=np.uint8)


@pytest.mark.parametrize("data", SAMPLES)
def test_png_decodes_back(data: str, tmp_path: Path) -> None:
    target = tmp_path / "card.png"
    png = qr_png(data, target)
    assert png.startswith(PNG_SIGNATURE)
    assert target.read_bytes() == png
    assert _cv2_decode(_png_to_gray(png)) == data


def test_png_box_size_scales_the_image() -> None:
    small = _png_to_gray(qr_png("PL0000001234566", box_size=4))
    large = _png_to_gray(qr_png("PL0000001234566", box_size=8))
    assert large.shape[0] == 2 * small.shape[0]
    assert _cv2_decode(small) == "PL0000001234566"
    with pytest.raises(ValueError, match="box_size"):
        qr_png("x", box_size=0)


@pytest.mark.skipif(
    ctypes.util.find_library("zbar") is None,
    reason="libzbar is not installed (Debian: apt-get install libzbar0); pyzbar cannot load",
)
@pytest.mark.parametrize("data", SAMPLES)
def test_png_decodes_back_with_zbar(data: str) -> None:
    from pyzbar.pyzbar import decode

    with Image.open(io.BytesIO(qr_png(data))) as image:
        results = decode(image)
    assert [r.data.decode("utf-8") for r in results] == [data]


def test_svg_is_xml_with_an_svg_root(tmp_path: Path) -> None:
    target = tmp_path / "card.svg"
    svg = qr_svg("PL0000001234566", target)
    assert target.read_text(encoding="utf-8") == svg
    root = ET.fromstring(svg.encode("utf-8"))
    assert root.tag in ("svg", "{http://www.w3.org/2000/svg}svg")
    assert any(child.tag.endswith("path") for child in root.iter())


# --- terminal ---------------------------------------------------------------------------

_CHAR_TO_MODULES = {" ": (0, 0), "\u2580": (1, 0), "\u2584": (0, 1), "\u2588": (1, 1)}


def _terminal_to_matrix(text: str) -> list[list[int]]:
    """Re-parse half-block text into a module matrix (1 = dark)."""
    lines = text.splitlines()
    matrix: list[list[int]] = []
    for line in lines:
        pairs = [_CHAR_TO_MODULES[ch] for ch in line]
        matrix.append([top for top, _ in pairs])
        matrix.append([bottom for _, bottom in pairs])
    return matrix


def _matrix_to_gray(matrix: list[list[int]], scale: int = 8) -> NDArray[np.uint8]:
    modules = np.array(matrix, dtype=np.uint8)
    image = np.where(modules == 1, 0, 255).astype(np.uint8)
    return np.kron(image, np.ones((scale, scale), dtype=np.uint8))


@pytest.mark.parametrize("data", SAMPLES)
def test_terminal_decodes_back(data: str) -> None:
    text = qr_terminal(data)
    assert set(text) <= {" ", "\u2580", "\u2584", "\u2588", "\n"}
    assert text.endswith("\n")
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1, "all lines have the same width"

    matrix = _terminal_to_matrix(text)
    width = len(matrix[0])
    # The symbol is square: width = symbol + 2 * quiet zone; rows are padded to even.
    assert len(matrix) in (width, width + 1)
    # A 2-module quiet zone on every side.
    for row in matrix[:2] + matrix[width - 2 :]:
        assert not any(row)
    for row in matrix:
        assert not any(row[:2]) and not any(row[-2:])
    assert any(matrix[2]) and any(row[2] for row in matrix)

    # Decoded straight from the 2-module quiet zone, no extra margin added.
    assert _cv2_decode(_matrix_to_gray(matrix)) == data


def test_terminal_fits_a_terminal() -> None:
    lines = qr_terminal("PL0000001234566").splitlines()
    # Version 1 (21 modules) + 2 * 2 quiet zone = 25 columns, 13 lines.
    assert len(lines[0]) == 25
    assert len(lines) == 13


def test_empty_data_is_refused() -> None:
    for render in (qr_png, qr_svg, qr_terminal):
        with pytest.raises(ValueError, match="must not be empty"):
            render("")
