"""The same code from the same reader within a window is one read.

A presentation scanner sees a card held in front of it several times a second, and a
cashier often scans twice "to be sure". :class:`Debouncer` lets the first read through and
swallows repeats of the same (reader, symbology, text, rejection) until ``window`` seconds
have passed since the read it let through. A different code always passes at once.
"""

from __future__ import annotations

from drivers.model import CardRead

__all__ = ["Debouncer"]

_Key = tuple[str, str, str, str | None]


class Debouncer:
    """``accept(read)`` is True for a read to deliver, False for a repeat inside the window."""

    def __init__(self, window: float = 1.0) -> None:  # float ok: seconds
        if window < 0:
            raise ValueError("the debounce window cannot be negative")
        self.window = window
        self._last: dict[_Key, float] = {}

    def accept(self, read: CardRead) -> bool:
        if self.window == 0:
            return True
        now = read.at
        key: _Key = (read.source, read.symbology.value, read.text, read.rejected)
        if len(self._last) > 256:
            self._prune(now)
        last = self._last.get(key)
        if last is not None and 0 <= now - last < self.window:
            return False
        self._last[key] = now
        return True

    def reset(self) -> None:
        self._last.clear()

    def _prune(self, now: float) -> None:
        self._last = {k: t for k, t in self._last.items() if now - t < self.window}
