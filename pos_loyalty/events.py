"""A small in-process event bus: card reads, reader health and sync status, for whoever listens.

The terminal UI publishes what its readers deliver; the plugin API streams the bus to a POS as
Server-Sent Events (``GET /v1/events``, see :mod:`pos_loyalty.sse`). Publishing is allowed
from any thread; each subscriber receives on its own asyncio loop. A slow subscriber never
blocks a publisher: its queue is bounded and the oldest events are dropped (it is told how
many: ``Subscription.dropped``).

Payment-card data never enters the bus: a rejected read is published as ``card_rejected``
with its source and reason only, and a read whose text carries a payment card is treated the
same even if the reader did not flag it.

Also here (headless, so the sync service can implement it without importing the UI): the
sync status provider interface the terminal and ``/v1/health`` show.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from drivers.model import CardRead, ReaderStatus
from drivers.payment_guard import carries_payment_card

__all__ = [
    "BusEvent",
    "EventBus",
    "NoSync",
    "Subscription",
    "SyncStatus",
    "SyncStatusProvider",
    "card_read_event",
    "reader_status_event",
    "sync_status_event",
]

CARD_READ = "card_read"
CARD_REJECTED = "card_rejected"
READER_STATUS = "reader_status"
SYNC_STATUS = "sync_status"


@dataclass(frozen=True)
class BusEvent:
    """One published event: a sequence ``id`` (per bus), a ``type`` and JSON-ready ``data``."""

    id: int
    type: str
    data: Mapping[str, Any] = field(default_factory=dict)


class Subscription:
    """One listener's queue. Iterate it (async) inside the loop that subscribed."""

    def __init__(self, bus: EventBus, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self._bus = bus
        self._loop = loop
        self._queue: asyncio.Queue[BusEvent] = asyncio.Queue(maxsize=size)
        self.dropped = 0  # events lost because this subscriber fell behind
        self.closed = False

    def _offer(self, event: BusEvent) -> None:  # runs in the subscriber's loop
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    def deliver(self, event: BusEvent) -> bool:
        """Hand ``event`` over from any thread; False when the subscriber's loop is gone."""
        if self.closed or self._loop.is_closed():
            return False
        try:
            self._loop.call_soon_threadsafe(self._offer, event)
        except RuntimeError:  # loop closed meanwhile
            return False
        return True

    async def get(self, timeout: float | None = None) -> BusEvent | None:  # float ok: seconds
        """The next event, or None after ``timeout`` seconds without one."""
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    def __aiter__(self) -> AsyncIterator[BusEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[BusEvent]:
        while not self.closed:
            yield await self._queue.get()

    def close(self) -> None:
        self.closed = True
        self._bus._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class EventBus:
    """Publish from anywhere, subscribe from an asyncio loop."""

    def __init__(self, queue_size: int = 256) -> None:
        self._queue_size = queue_size
        self._subscribers: list[Subscription] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.last: dict[str, BusEvent] = {}  # newest event per type (e.g. the sync status)

    def subscribe(self) -> Subscription:
        """A new subscription bound to the running loop (call from inside it)."""
        sub = Subscription(self, asyncio.get_running_loop(), self._queue_size)
        with self._lock:
            self._subscribers.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def publish(self, type_: str, data: Mapping[str, Any] | None = None) -> BusEvent:
        with self._lock:
            event = BusEvent(next(self._ids), type_, dict(data or {}))
            self.last[type_] = event
            subscribers = list(self._subscribers)
        for sub in subscribers:
            if not sub.deliver(event):
                self._remove(sub)
        return event

    def publish_read(self, read: CardRead) -> BusEvent:
        return self.publish(*card_read_event(read))

    def publish_reader_status(self, status: ReaderStatus) -> BusEvent:
        return self.publish(*reader_status_event(status))


def card_read_event(read: CardRead) -> tuple[str, dict[str, Any]]:
    """The bus form of a read; payment-card data is reduced to source and reason."""
    if read.rejected or carries_payment_card(read.text):
        return CARD_REJECTED, {
            "source": read.source,
            "reason": read.rejected or "payment_card",
            "message": "A payment card was read; its data was not kept.",
        }
    return CARD_READ, {
        "source": read.source,
        "code": read.text,
        "symbology": read.symbology.value,
        "aim": read.aim,
    }


def reader_status_event(status: ReaderStatus) -> tuple[str, dict[str, Any]]:
    return READER_STATUS, {
        "source": status.source,
        "state": status.state.value,
        "message": status.message,
    }


# --------------------------------------------------------------------------- sync status


@dataclass(frozen=True)
class SyncStatus:
    """What the till knows about its sync with the central server.

    ``configured`` False: this till does not sync (stand-alone) or the sync service is not
    running. ``last_sync`` is the last successful exchange with the server (aware datetime).
    ``message`` is for a person, e.g. "server unreachable since 10:02".
    """

    online: bool = False
    configured: bool = False
    last_sync: datetime | None = None
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "online": self.online,
            "sync_configured": self.configured,
            "last_sync": self.last_sync.isoformat() if self.last_sync else None,
            "sync_message": self.message,
        }


class SyncStatusProvider(Protocol):
    """Anything that says how sync is going. Called often (every second or two): be cheap,
    never block on the network."""

    def sync_status(self) -> SyncStatus: ...


class NoSync:
    """The default provider: no sync service, so offline by definition."""

    def __init__(self, message: str = "sync not configured") -> None:
        self.message = message

    def sync_status(self) -> SyncStatus:
        return SyncStatus(online=False, configured=False, last_sync=None, message=self.message)


def sync_status_event(status: SyncStatus, events_waiting: int | None) -> tuple[str, dict[str, Any]]:
    return SYNC_STATUS, {**status.to_json(), "events_waiting": events_waiting}
