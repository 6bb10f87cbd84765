"""A small deterministic set of 'photos' of codes with their expected text.

Each picture is a real code (QR from ``qrcode``, linear codes from zxing-cpp's writer) warped
onto a textured background with a random perspective, rotation, scale, blur, sensor noise and
JPEG compression, at 640x480 -- roughly what a phone or a till camera delivers, from easy to
hard. Used by the decoder tests (pass rates per symbology) and the CLI tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drivers.model import Symbology
from tests.drivers import synth


@dataclass(frozen=True)
class Photo:
    symbology: Symbology
    expected: str
    image: np.ndarray


def _payload(rng: np.random.Generator, sym: Symbology) -> str:
    digits = "".join(str(d) for d in rng.integers(0, 10, 12))
    if sym is Symbology.EAN13:
        return synth.ean13_with_check(digits)
    if sym is Symbology.QR:
        return (
            f"PL{digits}{digits[-1]}" if rng.random() < 0.5 else f"https://shop.example/c/{digits}"
        )
    if sym is Symbology.CODE39:
        return f"PL{digits[:8]}"
    return f"PL{digits}1"


_WRITER = {Symbology.EAN13: "EAN13", Symbology.CODE128: "Code128", Symbology.CODE39: "Code39"}


def photos(per_symbology: int = 16, seed: int = 7) -> list[Photo]:
    rng = np.random.default_rng(seed)
    out: list[Photo] = []
    for sym in (Symbology.QR, Symbology.EAN13, Symbology.CODE128, Symbology.CODE39):
        for i in range(per_symbology):
            text = _payload(rng, sym)
            hard = i / max(per_symbology - 1, 1)  # 0 = easy ... 1 = hard
            if sym is Symbology.QR:
                code = synth.qr_image(text, module_px=int(rng.integers(3, 6)))
            else:
                code = synth.linear_image(text, _WRITER[sym], module_px=int(rng.integers(2, 4)))
            frame = synth.place(
                synth.background(rng, 480, 640),
                code,
                rng,
                scale=float(rng.uniform(0.8, 1.2)),
                angle=float(rng.uniform(-40, 40) * hard),
                tilt=float(rng.uniform(0, 0.35) * hard),
                center=(320 + int(rng.integers(-40, 40)), 240 + int(rng.integers(-30, 30))),
            )
            frame = synth.degrade(
                frame,
                rng,
                blur=float(rng.uniform(0.3, 0.6 + 1.6 * hard)),
                noise=float(rng.uniform(2, 4 + 10 * hard)),
                jpeg=int(rng.integers(max(25, 90 - int(60 * hard)), 95)),
            )
            out.append(Photo(sym, text, frame))
    return out
