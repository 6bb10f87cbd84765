"""Split a byte stream from a scanner into scans.

Serial scanners end every scan with a suffix (CR, LF, CR LF or TAB, configurable on the
scanner) and some also send a prefix (often STX). Others send no suffix at all: a scan then
ends when the line has been quiet for an inter-byte timeout.

:class:`Framer` is incremental and pure: feed it chunks as they arrive (any chunk size) and
the current monotonic time; it returns the complete frames. Stale half-frames (line noise
followed by silence) are dropped so they cannot corrupt the next scan. Buffers are
``bytearray`` and are zero-filled when discarded, so card data does not linger in memory
longer than needed.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FRAMINGS", "Framer", "FramingConfig"]

FRAMINGS: dict[str, bytes] = {
    "cr": b"\r",
    "lf": b"\n",
    "crlf": b"\r\n",
    "tab": b"\t",
    "none": b"",
}


@dataclass(frozen=True)
class FramingConfig:
    """How scans are delimited.

    Attributes:
      framing: one of :data:`FRAMINGS` ("none" means: a scan ends after ``inter_byte_timeout``).
      prefix: bytes every scan starts with (b"" for none). With a prefix, bytes before it are
        dropped as noise.
      inter_byte_timeout: seconds of silence that end a scan when ``framing`` is "none".
      stale_timeout: seconds of silence after which an unfinished frame is dropped (suffix
        framing); 0 disables this.
      max_length: longer frames are dropped (a stuck or noisy line must not grow memory).
    """

    framing: str = "cr"
    prefix: bytes = b""
    inter_byte_timeout: float = 0.05  # float ok: seconds
    stale_timeout: float = 1.0  # float ok: seconds
    max_length: int = 8192

    def __post_init__(self) -> None:
        if self.framing not in FRAMINGS:
            raise ValueError(f"unknown framing {self.framing!r}; use one of {sorted(FRAMINGS)}")
        if self.inter_byte_timeout <= 0:
            raise ValueError("inter_byte_timeout must be positive")
        if self.max_length < 1:
            raise ValueError("max_length must be at least 1")


def _wipe(buf: bytearray) -> None:
    buf[:] = bytes(len(buf))
    del buf[:]


class Framer:
    """Incremental framer: ``feed(chunk, now)`` and ``poll(now)`` return complete frames.

    Frames are returned without prefix and suffix. Empty frames (two suffixes in a row, or a
    CR LF on a CR-framed line) are skipped.
    """

    def __init__(self, config: FramingConfig | None = None) -> None:
        self.config = config or FramingConfig()
        self._suffix = FRAMINGS[self.config.framing]
        self._buf = bytearray()
        self._last: float | None = None  # float ok: monotonic time of the last byte
        self.dropped = 0  # frames dropped as stale or too long (a counter, never data)

    @property
    def pending(self) -> int:
        """Bytes waiting in an unfinished frame."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget any unfinished frame (e.g. after a reconnect)."""
        _wipe(self._buf)
        self._last = None

    def deadline(self) -> float | None:
        """When :meth:`poll` next has something to do (monotonic seconds), or None."""
        if not self._buf or self._last is None:
            return None
        if not self._suffix:
            return self._last + self.config.inter_byte_timeout
        if self.config.stale_timeout > 0:
            return self._last + self.config.stale_timeout
        return None

    def poll(self, now: float) -> list[bytes]:
        """Frames completed by silence up to ``now`` (only with framing "none")."""
        if not self._buf or self._last is None:
            return []
        quiet = now - self._last
        if not self._suffix:
            if quiet >= self.config.inter_byte_timeout:
                return self._take_all()
            return []
        if self.config.stale_timeout > 0 and quiet >= self.config.stale_timeout:
            self.dropped += 1
            self.reset()
        return []

    def feed(self, chunk: bytes, now: float) -> list[bytes]:
        """Add ``chunk`` (received at ``now``) and return the frames it completes."""
        frames = self.poll(now)
        if not chunk:
            return frames
        self._buf.extend(chunk)
        self._last = now
        if self._suffix:
            frames.extend(self._split())
        if len(self._buf) > self.config.max_length:
            self.dropped += 1
            self.reset()
        return frames

    def flush(self) -> list[bytes]:
        """Return what is buffered as a frame (framing "none") or drop it (suffix framing)."""
        if not self._suffix:
            return self._take_all()
        self.reset()
        return []

    # -- internals ---------------------------------------------------------------------------

    def _take_all(self) -> list[bytes]:
        frame = self._strip_prefix(bytes(self._buf))
        self.reset()
        return [frame] if frame else []

    def _strip_prefix(self, frame: bytes) -> bytes:
        prefix = self.config.prefix
        if not prefix:
            return frame
        at = frame.rfind(prefix)
        if at < 0:
            return b""  # no prefix: noise
        return frame[at + len(prefix) :]

    def _split(self) -> list[bytes]:
        frames: list[bytes] = []
        suffix = self._suffix
        while True:
            at = self._buf.find(suffix)
            if at < 0:
                break
            frame = bytes(self._buf[:at])
            self._buf[: at + len(suffix)] = bytes(at + len(suffix))
            del self._buf[: at + len(suffix)]
            # A CR LF line on a CR- or LF-framed port: drop the other half of the pair.
            if suffix in (b"\r", b"\n"):
                frame = frame.strip(b"\r\n")
            frame = self._strip_prefix(frame)
            if frame:
                frames.append(frame)
        return frames
