"""``GET /v1/events``: the event bus as Server-Sent Events, for a POS with its own screen.

Each event is ``id: N``, ``event: <type>`` (``card_read``, ``card_rejected``,
``reader_status``, ``sync_status``) and ``data: <JSON>``. There is no replay of history: the
stream starts with a ``hello`` event (the terminal's health: ids, online, events waiting), then
carries what happens from then on. A comment line is sent every
``heartbeat`` seconds so proxies and clients notice a dead connection. A client that falls
behind loses the oldest events (a ``dropped`` event says how many).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from pos_loyalty.events import BusEvent, EventBus

__all__ = ["events_router", "format_event"]


def format_event(event: BusEvent) -> bytes:
    data = json.dumps(dict(event.data), separators=(",", ":"), sort_keys=True)
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()


def events_router(
    bus: EventBus | None,
    *,
    hello: Callable[[], Mapping[str, Any]] | None = None,
    heartbeat: float = 15.0,  # float ok: seconds
) -> APIRouter:
    """A router serving ``GET /v1/events`` from ``bus`` (a new, quiet bus when None: the
    endpoint exists but only says hello); ``hello`` supplies the first event's data."""
    source = bus if bus is not None else EventBus()
    router = APIRouter()

    @router.get(
        "/v1/events",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
        summary="Card reads and sync status as Server-Sent Events",
    )
    async def events(request: Request) -> StreamingResponse:
        # Before the stream starts: a till that cannot answer (a damaged ledger) gets its
        # JSON error from the app's handlers, not a stream cut after its headers.
        first = await asyncio.to_thread(hello) if hello else {}
        sub = source.subscribe()

        async def stream() -> AsyncIterator[bytes]:
            try:
                yield b"retry: 3000\n"
                yield format_event(BusEvent(0, "hello", dict(first)))
                dropped = 0
                while not await request.is_disconnected():
                    event = await sub.get(timeout=heartbeat)
                    if sub.dropped != dropped:
                        yield format_event(BusEvent(0, "dropped", {"count": sub.dropped - dropped}))
                        dropped = sub.dropped
                    yield b": keep-alive\n\n" if event is None else format_event(event)
            finally:
                sub.close()

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    return router
