"""Still-image and frame decoding: real codes, synthetic 'photos', normalisation, the guard."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

import cv2
import numpy as np
import pytest
import qrcode

from drivers.decode import (
    DEFAULT_FORMATS,
    DecodeError,
    FrameDecoder,
    Image,
    _gray,
    _Zbar,
    _Zxing,
    decode_file,
    decode_image,
    normalise_gtin,
    parse_formats,
)
from drivers.model import Symbology
from tests.drivers import synth
from tests.drivers.photoset import photos

ALL = (Symbology.QR, Symbology.EAN13, Symbology.CODE128, Symbology.CODE39)

# Floors for the pass rate of both decoders together on the generated photo set (16 pictures
# per symbology, from easy to hard; the hardest are meant to fail). Measured when written
# (zxing-cpp 3.1, libzbar0 0.23): QR 14/16, EAN-13 12/16, Code 128 10/16, Code 39 9/16 --
# `pytest -s` prints the table, per decoder.
FLOORS = {Symbology.QR: 0.8, Symbology.EAN13: 0.65, Symbology.CODE128: 0.55, Symbology.CODE39: 0.45}


def _match(text: str, expected: str) -> bool:
    return text == expected


def test_pass_rates_per_symbology_on_generated_photos() -> None:
    zx, zb = _Zxing(ALL), _Zbar(ALL)
    decoder = FrameDecoder(formats=ALL)
    table: dict[Symbology, list[int]] = {s: [0, 0, 0, 0] for s in ALL}
    for photo in photos():
        row = table[photo.symbology]
        gray = _gray(photo.image)
        a = any(
            _match(normalise_gtin(h.text) or h.text, photo.expected)
            for h in zx.decode(gray, thorough=True)
        )
        b = any(_match(normalise_gtin(h.text) or h.text, photo.expected) for h in zb.decode(gray))
        row[0] += 1
        row[1] += a
        row[2] += b
        row[3] += a or b
    # decode_image = both decoders; check it agrees on one picture of each kind.
    for photo in photos(per_symbology=1, seed=1):
        assert [r.text for r in decoder.decode_image(photo.image)] == [photo.expected]

    print("\npass rates on generated photos (zxing-cpp / pyzbar / both):")
    for sym, (n, n_zx, n_zb, both) in table.items():
        print(f"  {sym.value:8} n={n:3}  {n_zx / n:5.0%}  {n_zb / n:5.0%}  {both / n:5.0%}")
    for sym, (n, _a, _b, both) in table.items():
        assert both / n >= FLOORS[sym], f"{sym.value}: {both}/{n} below {FLOORS[sym]:.0%}"


def test_frame_and_image_modes_normalise_upc_a_to_gtin13() -> None:
    upc = synth.linear_image("036000291452", "UPCA", module_px=3)
    frame = synth.place(
        synth.background(np.random.default_rng(0), 480, 640),
        upc,
        np.random.default_rng(0),
        scale=1.0,
        angle=0,
        tilt=0,
    )
    for reads in (FrameDecoder().decode_frame(frame), decode_image(frame)):
        assert [(r.symbology, r.text, r.raw, r.aim) for r in reads] == [
            (Symbology.EAN13, "0036000291452", b"0036000291452", "]E0")
        ]


def test_formats_restrict_what_is_reported() -> None:
    rng = np.random.default_rng(2)
    frame = synth.background(rng, 480, 640)
    frame = synth.place(
        frame, synth.qr_image("PL0000001234567"), rng, scale=1, angle=0, tilt=0, center=(160, 240)
    )
    frame = synth.place(
        frame,
        synth.linear_image("CARD42", "Code39"),
        rng,
        scale=1,
        angle=0,
        tilt=0,
        center=(470, 240),
    )
    assert {r.symbology for r in decode_image(frame, formats=ALL)} == {
        Symbology.QR,
        Symbology.CODE39,
    }
    assert {r.symbology for r in decode_image(frame, formats=(Symbology.QR,))} == {Symbology.QR}
    code39 = decode_image(frame, formats=parse_formats(["code39"]))
    assert [(r.text, r.aim) for r in code39] == [("CARD42", "]A0")]


def test_code128_aim_and_default_formats() -> None:
    image = synth.linear_image("PL0000001234567", "Code128")
    image = np.pad(image, 30, constant_values=255)
    [read] = decode_image(image)
    assert (read.symbology, read.text, read.aim) == (Symbology.CODE128, "PL0000001234567", "]C0")
    assert Symbology.CODE39 in DEFAULT_FORMATS and Symbology.QR in DEFAULT_FORMATS


def test_payment_card_in_a_qr_is_rejected_and_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    track2 = ";4111111111111111=2512101123456789?"
    image = synth.qr_image(track2)
    caplog.set_level(logging.DEBUG)
    for reads in (decode_image(image), FrameDecoder().decode_frame(image)):
        assert len(reads) == 1
        read = reads[0]
        assert read.rejected == "payment_card"
        assert read.text == "" and read.raw == b""
        assert "4111" not in repr(read)
    assert "4111" not in caplog.text


def test_own_prefix_lets_the_shops_range_through() -> None:
    image = synth.qr_image("4111111111111111")
    assert decode_image(image)[0].rejected == "payment_card"
    assert decode_image(image, own_prefixes=("411111",))[0].text == "4111111111111111"


def test_non_utf8_qr_payload_keeps_raw_bytes() -> None:
    payload = bytes([0x50, 0x4C, 0xE9, 0xFF, 0x00, 0x81])
    code = qrcode.QRCode(border=4, box_size=6)
    code.add_data(payload)
    code.make(fit=True)
    image = np.asarray(code.make_image().convert("L"), dtype=np.uint8)
    [read] = decode_image(image)
    assert read.symbology is Symbology.QR
    assert read.raw == payload
    assert isinstance(read.text, str) and read.text.startswith("PL")


def test_decode_file_and_errors(tmp_path: Path) -> None:
    image = synth.qr_image("PL0000001234567")
    png = tmp_path / "card.png"
    cv2.imwrite(str(png), image)
    assert [r.text for r in decode_file(png)] == ["PL0000001234567"]
    assert decode_file(png)[0].source == str(png)
    with pytest.raises(DecodeError, match="cannot read"):
        decode_file(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DecodeError, match="not an image"):
        decode_file(bad)
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((100, 100), 255, np.uint8))
    assert decode_file(blank) == []


def test_bgr_bgra_and_gray_inputs() -> None:
    gray = np.pad(synth.qr_image("PL0000001234567"), 10, constant_values=255)
    # cvtColor keeps the uint8 depth
    bgr = cast(Image, cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    bgra = cast(Image, cv2.cvtColor(gray, cv2.COLOR_GRAY2BGRA))
    for image in (gray, bgr, bgra, gray[:, :, None]):
        assert [r.text for r in decode_image(image)] == ["PL0000001234567"]


@pytest.mark.parametrize(
    ("text", "gtin"),
    [
        ("4006381333931", "4006381333931"),
        ("036000291452", "0036000291452"),  # UPC-A
        ("04252614", "0042100005264"),  # UPC-E -> UPC-A 042100005264
        ("4006381333932", None),  # wrong check digit
        ("40063813339", None),
        ("ABC", None),
    ],
)
def test_normalise_gtin(text: str, gtin: str | None) -> None:
    assert normalise_gtin(text) == gtin


def test_parse_formats() -> None:
    assert parse_formats(["QR", "ean", "upc-a", "code128"]) == (
        Symbology.QR,
        Symbology.EAN13,
        Symbology.CODE128,
    )
    with pytest.raises(ValueError, match="unknown barcode format 'maxicode'"):
        parse_formats(["maxicode"])
    with pytest.raises(ValueError):
        parse_formats([])
    with pytest.raises(ValueError):
        parse_formats([Symbology.MSR_TRACK1])


def test_module_import_is_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, drivers.decode; "
        "print([m for m in ('cv2','zxingcpp','pyzbar','pos_loyalty') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
