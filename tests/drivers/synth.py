"""Synthetic camera pictures of real codes: QR (``qrcode``) and EAN-13/Code 128 (zxing-cpp's
writer), placed on a textured background with perspective, blur, noise and JPEG loss.

Shared by the decoder, webcam and CLI tests and by ``bench/webcam_fps.py``. Deterministic for
a given ``numpy.random.Generator``.
"""

from __future__ import annotations

from typing import cast

import cv2
import numpy as np
import numpy.typing as npt
import qrcode
import zxingcpp

Gray = npt.NDArray[np.uint8]


def qr_image(text: str, module_px: int = 6) -> Gray:
    code = qrcode.QRCode(border=4, box_size=module_px)
    code.add_data(text)
    code.make(fit=True)
    return np.asarray(code.make_image().convert("L"), dtype=np.uint8)


def linear_image(text: str, fmt: str, module_px: int = 3, height: int = 90) -> Gray:
    barcode = zxingcpp.create_barcode(text, getattr(zxingcpp.BarcodeFormat, fmt))
    row = np.asarray(barcode.to_image(scale=1, add_quiet_zones=True))[0]
    row = np.repeat(row, module_px)
    return np.tile(row, (height, 1)).astype(np.uint8)


def background(rng: np.random.Generator, height: int = 720, width: int = 1280) -> Gray:
    """A smooth 'scene' (blurred random texture), like an out-of-focus counter."""
    small = rng.integers(0, 255, (height // 16, width // 16), dtype=np.uint8)
    scene = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    scene = cv2.GaussianBlur(scene, (0, 0), 6)
    return cv2.normalize(scene, None, 40, 200, cv2.NORM_MINMAX).astype(np.uint8)


def place(
    frame: Gray,
    code: Gray,
    rng: np.random.Generator,
    *,
    scale: float,
    angle: float,
    tilt: float,
    center: tuple[int, int] | None = None,
) -> Gray:
    """Warp ``code`` (with a white margin) into ``frame``: scale, rotation, perspective tilt."""
    h, w = code.shape
    pad = max(h, w) // 10
    card = cv2.copyMakeBorder(code, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=245)
    h, w = card.shape
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    fh, fw = frame.shape
    cx, cy = center or (fw // 2, fh // 2)
    hw, hh = w * scale / 2, h * scale / 2
    # Tilt: one side nearer to the camera (bigger) than the other.
    dst = np.array(
        [
            [-hw * (1 - tilt), -hh * (1 - tilt)],
            [hw, -hh],
            [hw, hh],
            [-hw * (1 - tilt), hh * (1 - tilt)],
        ],
        dtype=np.float32,
    )
    a = np.deg2rad(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], dtype=np.float32)
    dst = dst @ rot.T + np.array([cx, cy], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    warped = cv2.warpPerspective(card, matrix, (fw, fh), flags=cv2.INTER_LINEAR, borderValue=0)
    mask = cv2.warpPerspective(
        np.full_like(card, 255), matrix, (fw, fh), flags=cv2.INTER_LINEAR, borderValue=0
    )
    out = frame.copy()
    out[mask > 127] = warped[mask > 127]
    return out


def degrade(
    frame: Gray, rng: np.random.Generator, *, blur: float, noise: float, jpeg: int | None
) -> Gray:
    out = frame
    if blur > 0:
        out = cast(Gray, cv2.GaussianBlur(out, (0, 0), blur))  # uint8 in, uint8 out
    if noise > 0:
        out = (out.astype(np.float32) + rng.normal(0, noise, out.shape)).clip(0, 255)
        out = out.astype(np.uint8)
    if jpeg is not None:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, jpeg])
        assert ok
        decoded = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
        assert decoded is not None
        out = cast(Gray, decoded)  # IMREAD_GRAYSCALE: one uint8 channel
    return out


def ean13_with_check(body12: str) -> str:
    weighted = sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(body12))
    return body12 + str((10 - weighted % 10) % 10)
