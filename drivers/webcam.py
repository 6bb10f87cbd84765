"""A webcam (or a video file, or a network stream) as a card reader.

OpenCV's ``VideoCapture`` runs in a thread of its own; each frame goes through
:class:`drivers.decode.FrameDecoder` (zxing-cpp, pyzbar on a budget) and then through a
:class:`CodeTracker`, which turns "the code is in the picture" into *one* read:

* a code is emitted after ``confirm`` (default 2) identical decodes, so a single misread of a
  blurred frame is never emitted;
* it is not emitted again while it stays in the picture, however long the customer holds the
  phone up;
* it re-arms once it has left the picture: not decoded for ``rearm_frames`` frames in a row
  *and* for at least ``rearm_seconds``. Showing it again then gives a new read.

Events are :class:`CardRead` and :class:`ReaderStatus` values (connected, disconnected,
reconnecting, error). A camera that cannot be opened or stops delivering frames (unplugged)
is retried with exponential back-off; a video file is played once and ends with
``disconnected``. Works headless: no window is ever opened.

Three ways to consume it::

    with WebcamReader(0, name="camera") as reader:      # iterator
        for event in reader: ...

    WebcamReader("/dev/video0", on_event=handle).start()  # callback, from the capture thread

    async for event in reads("/dev/video0", name="camera"):  # asyncio
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from drivers.decode import DEFAULT_FORMATS, FrameDecoder
from drivers.model import CardRead, ReaderState, ReaderStatus, Symbology

__all__ = ["CodeTracker", "Event", "WebcamReader", "is_device_source", "parse_source", "reads"]

log = logging.getLogger(__name__)

Event = CardRead | ReaderStatus
_END = object()


def parse_source(source: int | str) -> int | str:
    """``0`` or ``"0"`` -> camera index 0; anything else (a path, a URL) stays as it is."""
    if isinstance(source, int):
        return source
    text = source.strip()
    if text.isascii() and text.isdigit():
        return int(text)
    return text


def is_device_source(source: int | str) -> bool:
    """True for a camera (index, ``/dev/video*``) or a network stream: these reconnect.

    Anything else is a video file, played once.
    """
    source = parse_source(source)
    if isinstance(source, int):
        return True
    if "://" in source:
        return not source.startswith("file://")
    return source.startswith("/dev/")


@dataclass
class _Track:
    hits: int
    last_frame: int
    last_seen: float  # float ok: seconds
    emitted: bool = False


class CodeTracker:
    """Turns per-frame decodes into one read per appearance of a code (see module doc)."""

    def __init__(
        self, *, confirm: int = 2, rearm_frames: int = 5, rearm_seconds: float = 0.3
    ) -> None:
        if confirm < 1 or rearm_frames < 1 or rearm_seconds < 0:
            raise ValueError("confirm and rearm_frames must be >= 1, rearm_seconds >= 0")
        self.confirm = confirm
        self.rearm_frames = rearm_frames
        self.rearm_seconds = rearm_seconds
        self._frame = 0
        self._tracks: dict[tuple[Symbology, str, str | None], _Track] = {}

    def reset(self) -> None:
        self._tracks.clear()

    def update(self, reads: Sequence[CardRead], now: float) -> list[CardRead]:
        """Feed the decodes of one frame taken at ``now`` (seconds); returns reads to emit."""
        self._frame += 1
        out: list[CardRead] = []
        for read in reads:
            key = (read.symbology, read.text, read.rejected)
            track = self._tracks.get(key)
            if track is None:
                track = self._tracks[key] = _Track(0, self._frame, now)
            if track.last_frame != self._frame or track.hits == 0:
                track.hits += 1
            track.last_frame = self._frame
            track.last_seen = now
            if not track.emitted and track.hits >= self.confirm:
                track.emitted = True
                out.append(read)
        for key, track in list(self._tracks.items()):
            gone_frames = self._frame - track.last_frame
            if gone_frames >= self.rearm_frames and now - track.last_seen >= self.rearm_seconds:
                del self._tracks[key]
        return out


class WebcamReader:
    """Reads codes from a camera index, a device path, a stream URL or a video file.

    Args:
      source: ``0``/``"0"`` (camera index), ``"/dev/video0"``, ``"rtsp://..."`` or a file.
      name: the reader's name, used as ``source`` of every event.
      decoder: a configured :class:`FrameDecoder` (default: one for ``formats``).
      formats, own_prefixes: for the default decoder.
      confirm, rearm_frames, rearm_seconds: see :class:`CodeTracker`.
      reconnect: retry after an open failure or unplug (default: yes, except for a file).
      backoff, backoff_max: first and largest wait between attempts, seconds.
      width, height: ask the camera for this resolution (cameras may ignore it).
      on_event: called from the capture thread with each event; when given, events are not
        queued for the iterator.
      on_close: called from the capture thread when the reader has finished.
    """

    def __init__(
        self,
        source: int | str,
        *,
        name: str = "webcam",
        decoder: FrameDecoder | None = None,
        formats: Sequence[Symbology] = DEFAULT_FORMATS,
        own_prefixes: Sequence[str] = (),
        confirm: int = 2,
        rearm_frames: int = 5,
        rearm_seconds: float = 0.3,
        reconnect: bool | None = None,
        backoff: float = 0.5,
        backoff_max: float = 5.0,
        width: int | None = None,
        height: int | None = None,
        on_event: Callable[[Event], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.source = parse_source(source)
        self.name = name
        self.is_device = is_device_source(self.source)
        self.reconnect = self.is_device if reconnect is None else reconnect
        self.decoder = decoder or FrameDecoder(formats=formats, own_prefixes=own_prefixes)
        self.tracker = CodeTracker(
            confirm=confirm, rearm_frames=rearm_frames, rearm_seconds=rearm_seconds
        )
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.width = width
        self.height = height
        self.frames = 0
        self._on_event = on_event
        self._on_close = on_close
        self._queue: queue.Queue[object] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._finished = False

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> WebcamReader:
        if self._thread is not None:
            raise RuntimeError("reader already started")
        self._thread = threading.Thread(target=self._run, name=f"webcam-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the capture thread to end and wait up to ``timeout`` seconds for it."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> WebcamReader:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- consuming ----------------------------------------------------------------------
    def get(self, timeout: float | None = None) -> Event | None:
        """The next event; None after ``timeout`` seconds or when the reader has finished."""
        if self._finished:
            return None
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _END:
            self._finished = True
            return None
        assert isinstance(item, CardRead | ReaderStatus)
        return item

    def __iter__(self) -> Iterator[Event]:
        """Events until the reader finishes (end of a file, stop(), no reconnect)."""
        if self._thread is None:
            self.start()
        while True:
            event = self.get()
            if event is None:
                return
            yield event

    # -- the capture thread -------------------------------------------------------------
    def _emit(self, event: Event) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:  # a consumer's bug must not kill the camera thread
                log.exception("webcam %s: event callback failed", self.name)
        else:
            self._queue.put(event)

    def _status(self, state: ReaderState, message: str) -> None:
        self._emit(ReaderStatus(self.name, state, message, time.monotonic()))

    def _describe(self) -> str:
        if isinstance(self.source, int):
            return f"camera {self.source}"
        return "video file" if not self.is_device else "camera stream"

    def _open(self) -> Any:
        import cv2

        cap = cv2.VideoCapture(self.source)
        if not cap.isOpened():
            cap.release()
            return None
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        return cap

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._queue.put(_END)
            if self._on_close is not None:
                try:
                    self._on_close()
                except Exception:
                    log.exception("webcam %s: close callback failed", self.name)

    def _wait_backoff(self, delay: float) -> bool:
        """Announce and wait ``delay`` seconds; False if stopped meanwhile."""
        self._status(ReaderState.RECONNECTING, f"{self._describe()}: retrying in {delay:.1f} s")
        return not self._stop.wait(delay)

    def _loop(self) -> None:
        import cv2

        delay = self.backoff
        what = self._describe()
        while not self._stop.is_set():
            try:
                cap = self._open()
            except cv2.error as exc:
                log.warning("webcam %s: open failed: %s", self.name, type(exc).__name__)
                cap = None
            if cap is None:
                self._status(ReaderState.ERROR, f"cannot open {what}")
                if not self.reconnect or not self._wait_backoff(delay):
                    return
                delay = min(delay * 2, self.backoff_max)
                continue
            self._status(ReaderState.CONNECTED, f"{what} open")
            delay = self.backoff
            self.tracker.reset()
            ended_cleanly = self._capture(cap)
            cap.release()
            if self._stop.is_set():
                self._status(ReaderState.DISCONNECTED, f"{what} closed")
                return
            if not self.is_device and ended_cleanly:
                self._status(ReaderState.DISCONNECTED, "end of video")
                return
            self._status(ReaderState.DISCONNECTED, f"{what} stopped delivering frames")
            if not self.reconnect or not self._wait_backoff(delay):
                return
            delay = min(delay * 2, self.backoff_max)

    def _capture(self, cap: Any) -> bool:
        """Read frames until the source ends or stop(); True for a clean end of input."""
        import cv2

        fps = cap.get(cv2.CAP_PROP_FPS) if not self.is_device else 0.0
        if not fps or fps != fps or fps <= 0:  # NaN or unknown
            fps = 30.0
        index = 0
        while not self._stop.is_set():
            try:
                ok, frame = cap.read()
            except cv2.error as exc:
                log.warning("webcam %s: read failed: %s", self.name, type(exc).__name__)
                return False
            if not ok or frame is None:
                return True
            index += 1
            self.frames += 1
            # A file is decoded faster (or slower) than real time: its own clock, from the
            # frame rate, keeps the re-arm time meaningful. A camera runs on the wall clock.
            now = index / fps if not self.is_device else time.monotonic()
            try:
                found = self.decoder.decode_frame(frame, source=self.name)
            except Exception as exc:  # never let one bad frame end the reader
                log.warning("webcam %s: frame not decoded: %s", self.name, type(exc).__name__)
                continue
            for read in self.tracker.update(found, now):
                self._emit(read)
        return False


async def reads(source: int | str, **options: Any) -> AsyncIterator[Event]:
    """The events of a :class:`WebcamReader` as an async iterator (for merging readers).

    ``options`` are those of :class:`WebcamReader` (not ``on_event``/``on_close``). Leaving
    the loop (break, cancellation) stops the capture thread.
    """
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[object] = asyncio.Queue()

    def put(item: object) -> None:
        # RuntimeError: the loop is closed, nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(inbox.put_nowait, item)

    reader = WebcamReader(source, on_event=put, on_close=lambda: put(_END), **options)
    reader.start()
    try:
        while True:
            item = await inbox.get()
            if item is _END:
                return
            assert isinstance(item, CardRead | ReaderStatus)
            yield item
    finally:
        reader._stop.set()
        await asyncio.to_thread(reader.stop)
