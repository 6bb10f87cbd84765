"""The webcam reader: a video file of synthetic frames through the real capture path."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from drivers.decode import FrameDecoder
from drivers.model import CardRead, ReaderState, ReaderStatus, Symbology
from drivers.webcam import CodeTracker, Event, WebcamReader, is_device_source, parse_source, reads
from tests.drivers import synth

QR_A = "PL0000001234567"
QR_B = "PL0000007654320"
EAN_X = synth.ean13_with_check("400638133393")
EAN_Y = synth.ean13_with_check("590123412345")
W, H = 960, 540  # a tablet camera's frame; 1280x720 is the benchmark's
GAP = 12  # empty frames between appearances: more than the re-arm time (0.3 s at 30 fps)


def _segment(
    rng: np.random.Generator, codes: list[np.ndarray], frames: int, *, dropouts: int = 0
) -> Iterator[np.ndarray]:
    """``frames`` frames with ``codes`` moving a little; ``dropouts`` badly blurred frames."""
    bg = synth.background(rng, H, W)
    centres = [(260, 220), (660, 320)]
    for i in range(frames):
        frame = bg
        for code, (cx, cy) in zip(codes, centres, strict=False):
            frame = synth.place(
                frame,
                code,
                rng,
                scale=float(rng.uniform(0.9, 1.2)),
                angle=float(rng.uniform(-15, 15)),
                tilt=float(rng.uniform(0.0, 0.2)),
                center=(cx + 4 * i, cy + 2 * i),
            )
        blur = 9.0 if 3 <= i < 3 + dropouts else float(rng.uniform(0.3, 1.3))
        yield synth.degrade(frame, rng, blur=blur, noise=float(rng.uniform(2, 8)), jpeg=None)


def _empty(rng: np.random.Generator, frames: int) -> Iterator[np.ndarray]:
    bg = synth.background(rng, H, W)
    for _ in range(frames):
        yield synth.degrade(bg, rng, blur=0.5, noise=5, jpeg=None)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(20261123)
    path = tmp_path_factory.mktemp("webcam") / "codes.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (W, H))
    assert writer.isOpened()
    qa, qb = synth.qr_image(QR_A), synth.qr_image(QR_B)
    ex, ey = synth.linear_image(EAN_X, "EAN13"), synth.linear_image(EAN_Y, "EAN13")
    parts = [
        _empty(rng, 5),
        _segment(rng, [qa], 10, dropouts=2),  # blurred frames inside: no second read
        _empty(rng, GAP),
        _segment(rng, [ex], 10, dropouts=1),
        _empty(rng, GAP),
        _segment(rng, [qb, ey], 10),
        _empty(rng, GAP),
        _segment(rng, [qa], 8),  # shown again after leaving: a new read
        _empty(rng, 4),
    ]
    for part in parts:
        for gray in part:
            writer.write(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def _texts(events: list[Event]) -> list[tuple[Symbology, str]]:
    return [(e.symbology, e.text) for e in events if isinstance(e, CardRead)]


EXPECTED = [
    (Symbology.QR, QR_A),
    (Symbology.EAN13, EAN_X),
    (Symbology.QR, QR_B),
    (Symbology.EAN13, EAN_Y),
    (Symbology.QR, QR_A),
]


def test_video_yields_each_appearance_once(video: Path) -> None:
    reader = WebcamReader(str(video), name="camera")
    events = list(reader)
    reads_ = _texts(events)
    # Codes of one segment may come in either order; segments come in order.
    assert sorted(reads_[2:4]) == sorted(EXPECTED[2:4])
    assert reads_[:2] + reads_[4:] == EXPECTED[:2] + EXPECTED[4:]
    statuses = [e for e in events if isinstance(e, ReaderStatus)]
    assert statuses[0].state is ReaderState.CONNECTED
    assert statuses[-1].state is ReaderState.DISCONNECTED
    assert statuses[-1].message == "end of video"
    assert all(e.source == "camera" for e in events)
    assert all(e.aim for e in events if isinstance(e, CardRead))
    assert reader.frames == 5 + 10 + GAP + 10 + GAP + 10 + GAP + 8 + 4


def test_async_adapter_yields_the_same_reads(video: Path) -> None:
    async def collect() -> list[Event]:
        return [event async for event in reads(str(video), name="camera")]

    events = asyncio.run(collect())
    assert sorted(_texts(events)) == sorted(EXPECTED)


def test_async_adapter_stops_the_thread_on_break(video: Path) -> None:
    async def first() -> Event:
        async for event in reads(str(video), name="camera"):
            return event
        raise AssertionError("no event")

    event = asyncio.run(first())
    assert isinstance(event, ReaderStatus) and event.state is ReaderState.CONNECTED


def test_callback_api(video: Path) -> None:
    got: list[Event] = []
    closed: list[bool] = []
    reader = WebcamReader(
        str(video), name="cam", on_event=got.append, on_close=lambda: closed.append(True)
    )
    reader.start()
    assert reader._thread is not None
    reader._thread.join(30)
    assert not reader.running and closed == [True]
    assert sorted(_texts(got)) == sorted(EXPECTED)
    assert reader.get(timeout=0) is None  # nothing queued when a callback takes the events


def test_stop_ends_a_running_reader(video: Path) -> None:
    reader = WebcamReader(str(video), name="cam").start()
    first = reader.get(timeout=10)
    assert isinstance(first, ReaderStatus) and first.state is ReaderState.CONNECTED
    reader.stop()
    assert not reader.running
    events = list(reader)
    assert events and isinstance(events[-1], ReaderStatus)
    assert events[-1].state is ReaderState.DISCONNECTED


def test_missing_file_reports_error_and_ends(tmp_path: Path) -> None:
    events = list(WebcamReader(str(tmp_path / "nope.avi"), name="cam"))
    assert [e.state for e in events if isinstance(e, ReaderStatus)] == [ReaderState.ERROR]
    assert isinstance(events[0], ReaderStatus)
    assert events[0].message == "cannot open video file"


def test_open_failure_retries_with_backoff_until_stopped(tmp_path: Path) -> None:
    reader = WebcamReader(
        str(tmp_path / "nope.avi"), name="cam", reconnect=True, backoff=0.01, backoff_max=0.02
    ).start()
    states: list[ReaderState] = []
    while len(states) < 6:
        event = reader.get(timeout=5)
        assert isinstance(event, ReaderStatus)
        states.append(event.state)
    reader.stop()
    assert not reader.running
    assert states[:4] == [
        ReaderState.ERROR,
        ReaderState.RECONNECTING,
        ReaderState.ERROR,
        ReaderState.RECONNECTING,
    ]


def test_sources() -> None:
    assert parse_source("0") == 0 and parse_source(" 2 ") == 2
    assert parse_source("/dev/video0") == "/dev/video0"
    assert is_device_source(0) and is_device_source("/dev/video2")
    assert is_device_source("rtsp://cam.local/stream")
    assert not is_device_source("/tmp/clip.avi") and not is_device_source("file:///tmp/a.avi")


def _read(text: str) -> CardRead:
    return CardRead(text, text.encode(), Symbology.QR, "cam", 0.0)


def test_tracker_confirms_twice_and_rearms_after_leaving() -> None:
    t = CodeTracker(confirm=2, rearm_frames=3, rearm_seconds=0.1)
    a = _read("A")
    now = 0.0
    out: list[CardRead] = []

    def frame(*codes: CardRead) -> None:
        nonlocal now
        now += 1 / 30
        out.extend(t.update(list(codes), now))

    frame(a)
    assert out == []  # one decode is not enough
    frame(a)
    assert out == [a]
    for _ in range(20):
        frame(a)
    frame()
    frame()  # two missed frames (blur): still in the picture
    frame(a)
    assert out == [a]
    for _ in range(4):
        frame()  # four frames, > 0.1 s: left the picture
    frame(a)
    frame(a)
    assert out == [a, a]


def test_tracker_single_misread_is_never_emitted() -> None:
    t = CodeTracker(confirm=2, rearm_frames=2, rearm_seconds=0.0)
    assert t.update([_read("X")], 0.0) == []
    assert t.update([], 0.1) == []
    assert t.update([], 0.2) == []
    assert t.update([_read("X")], 0.3) == []  # the earlier single decode was forgotten


def test_fallback_runs_on_a_budget_not_on_every_empty_frame() -> None:
    clock = [0.0]
    decoder = FrameDecoder(clock=lambda: clock[0], fallback_interval=0.5)
    empty = synth.background(np.random.default_rng(1), 240, 320)
    for _ in range(10):
        assert decoder.decode_frame(empty) == []
    assert decoder.stats.fallback_runs == 1
    clock[0] = 1.0
    decoder.decode_frame(empty)
    assert decoder.stats.fallback_runs == 2
