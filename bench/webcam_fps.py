"""Webcam decode path: frames per second on 1280x720 frames, one core.

What the capture thread does per frame (``FrameDecoder.decode_frame``: grayscale, zxing-cpp
restricted to QR + EAN/UPC + Code 128 + Code 39 with rotation and inversion off, pyzbar as
second decoder on its time budget) then ``CodeTracker.update``, measured on pre-made frames
(so camera I/O and JPEG decoding are not counted) in three scenes:

* empty: an out-of-focus counter with sensor noise, no code (pyzbar runs on its budget);
* QR in view: a phone-sized QR card, slightly rotated and tilted;
* EAN-13 in view: a product barcode.

Baseline in the same run: the cost of only converting the frame to grayscale
(``cv2.cvtColor``), the least any decode path must do. Target: >= 60 fps in every scene.

    python bench/webcam_fps.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import cv2
import numpy as np
import numpy.typing as npt
import qrcode
import zxingcpp

from drivers.decode import FrameDecoder
from drivers.webcam import CodeTracker

Frame = npt.NDArray[np.uint8]
W, H = 1280, 720
TARGET_FPS = 60.0


def _scene(rng: np.random.Generator) -> Frame:
    small = rng.integers(0, 255, (H // 16, W // 16), dtype=np.uint8)
    scene = cv2.GaussianBlur(cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC), (0, 0), 6)
    return np.asarray(cv2.normalize(scene, None, 40, 200, cv2.NORM_MINMAX), dtype=np.uint8)


def _place(frame: Frame, code: Frame, angle: float, tilt: float) -> Frame:
    code = cv2.copyMakeBorder(code, 20, 20, 20, 20, cv2.BORDER_CONSTANT, value=245)
    h, w = code.shape
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    hw, hh = w / 2, h / 2
    dst = np.float32([[-hw * (1 - tilt), -hh], [hw, -hh], [hw, hh], [-hw * (1 - tilt), hh]])
    a = np.deg2rad(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], dtype=np.float32)
    dst = (dst @ rot.T + np.float32([W / 2, H / 2])).astype(np.float32)
    m = cv2.getPerspectiveTransform(src, dst)
    warped = cv2.warpPerspective(code, m, (W, H), borderValue=0)
    mask = cv2.warpPerspective(np.full_like(code, 255), m, (W, H), borderValue=0)
    out = frame.copy()
    out[mask > 127] = warped[mask > 127]
    return out


def _frames(kind: str, n: int = 8) -> list[Frame]:
    rng = np.random.default_rng(1)
    qr = qrcode.QRCode(border=0, box_size=6)
    qr.add_data("PL0000001234567")
    qr_img = np.asarray(qr.make_image().convert("L"), dtype=np.uint8)
    ean = zxingcpp.create_barcode("4006381333931", zxingcpp.BarcodeFormat.EAN13)
    ean_row = np.repeat(np.asarray(ean.to_image(scale=1))[0], 3)
    ean_img = np.tile(ean_row, (100, 1)).astype(np.uint8)
    out = []
    for i in range(n):
        frame = _scene(rng)
        if kind == "qr":
            frame = _place(frame, qr_img, angle=5.0 + i, tilt=0.1)
        elif kind == "ean":
            frame = _place(frame, ean_img, angle=-4.0 + i, tilt=0.05)
        noisy = frame.astype(np.float32) + rng.normal(0, 4, frame.shape)
        gray = np.asarray(cv2.GaussianBlur(noisy.clip(0, 255).astype(np.uint8), (0, 0), 0.7))
        out.append(np.asarray(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), dtype=np.uint8))
    return out


def _fps(step: Callable[[Frame], object], frames: list[Frame], seconds: float) -> float:
    for frame in frames[:2]:
        step(frame)  # warm-up
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        step(frames[count % len(frames)])
        count += 1
    return count / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    args = parser.parse_args()
    cv2.setNumThreads(1)

    def gray(frame: Frame) -> object:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)

    print(f"webcam decode path, {W}x{H} BGR frames, one core (cv2.setNumThreads(1))")
    baseline = _fps(gray, _frames("empty", 4), args.seconds)
    print(f"baseline (grayscale only): {baseline:8.0f} fps  {1000 / baseline:6.2f} ms/frame")
    worst = float("inf")
    for kind, label in (
        ("empty", "no code in view"),
        ("qr", "QR in view"),
        ("ean", "EAN-13 in view"),
    ):
        frames = _frames(kind)
        decoder = FrameDecoder()
        tracker = CodeTracker()
        found: set[str] = set()

        def step(
            frame: Frame,
            decoder: FrameDecoder = decoder,
            tracker: CodeTracker = tracker,
            found: set[str] = found,
        ) -> object:
            reads = decoder.decode_frame(frame)
            found.update(r.text for r in reads)
            return tracker.update(reads, time.monotonic())

        fps = _fps(step, frames, args.seconds)
        worst = min(worst, fps)
        s = decoder.stats
        share = s.fallback_seconds / max(s.frames / fps, 1e-9)
        print(
            f"{label + ':':17} {fps:8.0f} fps  {1000 / fps:6.2f} ms/frame  "
            f"ratio to baseline: {baseline / fps:6.1f}x  decoded: {sorted(found) or '-'}  "
            f"pyzbar runs: {s.fallback_runs} ({share:.0%} of the time)"
        )
    verdict = "ok" if worst >= TARGET_FPS else "MISSED"
    print(f"target >= {TARGET_FPS:.0f} fps in every scene: {verdict} (worst {worst:.0f} fps)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
