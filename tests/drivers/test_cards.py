"""Cards to print and show: renders decode back to the code; signed payloads refuse tampering."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from PIL import Image

from drivers import cards
from drivers.decode import decode_image
from drivers.model import Symbology

CODES = ["PL0000001234567", "PL0000007654320", "AB1234567890128"]


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


@pytest.mark.parametrize("code", CODES)
def test_code128_png_decodes_back(code: str) -> None:
    reads = decode_image(_png(cards.code128_png(code)))
    assert [(r.symbology, r.text) for r in reads] == [(Symbology.CODE128, code)]


@pytest.mark.parametrize("code", CODES)
def test_qr_png_decodes_back(code: str) -> None:
    reads = decode_image(_png(cards.qr_png(code, box_size=4)))
    assert [(r.symbology, r.text) for r in reads] == [(Symbology.QR, code)]


def _raster_svg(svg: str, px_per_unit: float) -> np.ndarray:
    """Rasterise the rects and 'M x y h w v h h z' paths this module writes (black on white)."""
    root = ElementTree.fromstring(svg)
    _, _, vw, vh = (float(v) for v in root.attrib["viewBox"].split())
    img = np.full((int(vh * px_per_unit) + 1, int(vw * px_per_unit) + 1), 255, np.uint8)

    def fill(x: float, y: float, w: float, h: float) -> None:
        x0, y0 = round(x * px_per_unit), round(y * px_per_unit)
        x1, y1 = round((x + w) * px_per_unit), round((y + h) * px_per_unit)
        img[y0:y1, x0:x1] = 0

    ns = "{http://www.w3.org/2000/svg}"

    def walk(node: ElementTree.Element, dx: float, dy: float) -> None:
        move = re.fullmatch(r"translate\(([\d.]+) ([\d.]+)\)", node.attrib.get("transform", ""))
        if move:
            dx, dy = dx + float(move.group(1)), dy + float(move.group(2))
        if node.tag == f"{ns}rect":
            if node.attrib.get("fill", "#000") != "#fff" and "stroke" not in node.attrib:
                x, y, w, h = (float(node.attrib[k]) for k in ("x", "y", "width", "height"))
                fill(x + dx, y + dy, w, h)
        elif node.tag == f"{ns}path":
            for m in re.finditer(r"M([\d.]+) ([\d.]+)h([\d.]+)v([\d.]+)", node.attrib["d"]):
                x, y, w, h = (float(v) for v in m.groups())
                fill(x + dx, y + dy, w, h)
        for child in node:
            walk(child, dx, dy)

    walk(root, 0.0, 0.0)
    return img


def test_code128_and_qr_svg_decode_back() -> None:
    code = CODES[0]
    assert decode_image(_raster_svg(cards.code128_svg(code), 12))[0].text == code
    assert decode_image(_raster_svg(cards.qr_svg(code), 6))[0].text == code


def test_svg_files_are_written(tmp_path: Path) -> None:
    cards.code128_svg(CODES[0], tmp_path / "c.svg")
    cards.qr_svg(CODES[0], tmp_path / "q.svg")
    cards.code128_png(CODES[0], tmp_path / "c.png")
    cards.qr_png(CODES[0], tmp_path / "q.png")
    assert (tmp_path / "c.svg").read_text().startswith("<?xml")
    assert (tmp_path / "q.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_card_sheet_svg_holds_every_code_and_the_shop_name() -> None:
    key = cards.generate_key()
    payload = cards.sign_card(CODES[1], key)
    svg = cards.card_sheet_svg(CODES, "Café <Demo> & Co", qr_payloads=[CODES[0], payload, CODES[2]])
    ElementTree.fromstring(svg)  # well-formed despite <, & in the shop name
    assert svg.count("Café &lt;Demo&gt; &amp; Co") == 3 + 1  # each card and the title
    found = {(r.symbology, r.text) for r in decode_image(_raster_svg(svg, 12))}
    for code in CODES:
        assert (Symbology.CODE128, code) in found
    assert (Symbology.QR, payload) in found
    assert (Symbology.QR, CODES[0]) in found


def test_sheets_paginate_ten_cards_a_page() -> None:
    codes = [f"PL{n:013d}" for n in range(23)]
    pages = cards.card_sheets_svg(codes, "Shop")
    assert len(pages) == 3
    with pytest.raises(ValueError):
        cards.card_sheet_svg(codes, "Shop")


def test_card_sheet_pdf_structure_and_pages(tmp_path: Path) -> None:
    codes = [f"PL{n:013d}" for n in range(12)]
    pdf = cards.card_sheet_pdf(codes, "Café Demo", tmp_path / "s.pdf")
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")
    assert b"/Count 2" in pdf
    assert (tmp_path / "s.pdf").read_bytes() == pdf


@pytest.mark.skipif(shutil.which("gs") is None, reason="ghostscript not installed")
def test_card_sheet_pdf_renders_and_decodes(tmp_path: Path) -> None:
    pdf = tmp_path / "s.pdf"
    cards.card_sheet_pdf(CODES, "Café Demo", pdf)
    out = tmp_path / "p.png"
    subprocess.run(
        [
            "gs",
            "-q",
            "-dSAFER",
            "-dBATCH",
            "-dNOPAUSE",
            "-sDEVICE=pnggray",
            "-r300",
            f"-sOutputFile={out}",
            str(pdf),
        ],
        check=True,
        timeout=60,
    )
    found = {(r.symbology, r.text) for r in decode_image(np.asarray(Image.open(out)))}
    for code in CODES:
        assert (Symbology.CODE128, code) in found and (Symbology.QR, code) in found


def test_refuses_bad_codes() -> None:
    for bad in ("", "PL 123", "x" * 65, "4111111111111111", "PLé1"):
        with pytest.raises(ValueError):
            cards.code128_svg(bad)


# --------------------------------------------------------------------------- signatures


def test_signed_payload_round_trip_fits_a_small_qr() -> None:
    key = cards.generate_key()
    payload = cards.sign_card(CODES[0], key)
    assert cards.verify_card(payload, [key.public_key()]) == CODES[0]
    assert len(payload) <= 140 and re.fullmatch(r"[0-9A-Z:]+", payload)
    assert len(cards.qr_matrix(payload)) <= 41  # version 6 or smaller
    # Several known keys (rotation): the right one is picked by its id.
    others = [cards.generate_key().public_key() for _ in range(3)]
    assert cards.verify_card(payload, [*others, key.public_key()]) == CODES[0]


def test_every_single_character_change_is_refused() -> None:
    key = cards.generate_key()
    payload = cards.sign_card(CODES[0], key)
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ:"
    rng = np.random.default_rng(5)
    for i in range(len(payload)):
        ch = payload[i]
        for repl in {str(c) for c in rng.choice(list(alphabet), 3)} - {ch}:
            altered = payload[:i] + repl + payload[i + 1 :]
            with pytest.raises(cards.CardSignatureError):
                cards.verify_card(altered, [key.public_key()])


def test_another_key_or_forgery_is_refused() -> None:
    key, other = cards.generate_key(), cards.generate_key()
    payload = cards.sign_card(CODES[0], key)
    with pytest.raises(cards.CardSignatureError, match="does not know"):
        cards.verify_card(payload, [other.public_key()])
    # A forger who copies the key id but signs with their own key.
    forged = cards.sign_card(CODES[1], other).split(":")
    forged[2] = cards.key_id(key.public_key())
    with pytest.raises(cards.CardSignatureError, match="does not match"):
        cards.verify_card(":".join(forged), [key.public_key()])
    for junk in ("", "PL0000001234567", "LC1:PL0000001234567", "LC2:" + payload[4:]):
        with pytest.raises(cards.CardSignatureError):
            cards.verify_card(junk, [key.public_key()])


def test_key_pem_round_trip(tmp_path: Path) -> None:
    key = cards.generate_key()
    cards.save_private_key(key, tmp_path / "k.pem")
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        cards.save_private_key(key, tmp_path / "k.pem")
    cards.save_public_key(key.public_key(), tmp_path / "k.pub")
    loaded = cards.load_private_key(tmp_path / "k.pem")
    public = cards.load_public_key(tmp_path / "k.pub")
    assert cards.verify_card(cards.sign_card(CODES[0], loaded), [public]) == CODES[0]
    cards.save_private_key(key, tmp_path / "e.pem", passphrase=b"secret")
    assert b"ENCRYPTED" in (tmp_path / "e.pem").read_bytes()
    assert cards.key_id(
        cards.load_private_key(tmp_path / "e.pem", passphrase=b"secret").public_key()
    ) == cards.key_id(key.public_key())
    with pytest.raises(ValueError):
        cards.load_public_key(tmp_path / "k.pem")
