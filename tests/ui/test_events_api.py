"""The event bus and ``GET /v1/events`` (SSE), served by the terminal's embedded API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest

from drivers.model import CardRead, ReaderState, ReaderStatus, Symbology
from pos_loyalty.commands.terminal import EmbeddedApi, bind
from pos_loyalty.events import EventBus, NoSync, card_read_event
from pos_loyalty.service import Service

TRACK2 = ";4111111111111111=25121010000000000?"


@pytest.fixture
def api(till: Service) -> Iterator[tuple[EmbeddedApi, EventBus]]:
    bus = EventBus()
    sock = bind("127.0.0.1", 0)
    assert sock is not None
    server = EmbeddedApi(till, bus, lambda: NoSync().sync_status().to_json(), sock)
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/v1/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    try:
        yield server, bus
    finally:
        server.stop()


def read_events(lines: Iterator[str], count: int) -> list[tuple[str, dict[str, object]]]:
    out: list[tuple[str, dict[str, object]]] = []
    kind = ""
    for line in lines:
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            out.append((kind, json.loads(line[6:])))
            if len(out) == count:
                break
    return out


def test_health_reports_sync_status_from_the_provider(api: tuple[EmbeddedApi, EventBus]) -> None:
    server, _ = api
    body = httpx.get(f"http://127.0.0.1:{server.port}/v1/health").json()
    assert body["online"] is False
    assert body["sync_configured"] is False


def test_sse_streams_card_reads_reader_status_and_sync(
    api: tuple[EmbeddedApi, EventBus], codes: list[str]
) -> None:
    server, bus = api
    url = f"http://127.0.0.1:{server.port}/v1/events"
    with httpx.stream("GET", url, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        hello = read_events(lines, 1)
        assert hello[0][0] == "hello" and hello[0][1]["terminal_id"] == "till-1"
        deadline = time.monotonic() + 5
        while bus.subscriber_count == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        bus.publish_read(CardRead(codes[0], b"", Symbology.QR, "camera", 1.0))
        bus.publish_read(CardRead(TRACK2, TRACK2.encode(), Symbology.MSR_TRACK2, "msr", 2.0))
        bus.publish_reader_status(ReaderStatus("msr", ReaderState.DISCONNECTED, "unplugged", 3))
        bus.publish("sync_status", {"online": True, "events_waiting": 0})
        got = read_events(lines, 4)
    assert got[0] == (
        "card_read",
        {"aim": None, "code": codes[0], "source": "camera", "symbology": "qr"},
    )
    assert got[1][0] == "card_rejected" and "4111" not in json.dumps(got[1][1])
    assert got[2] == (
        "reader_status",
        {"message": "unplugged", "source": "msr", "state": "disconnected"},
    )
    assert got[3] == ("sync_status", {"events_waiting": 0, "online": True})


def test_payment_card_never_enters_the_bus() -> None:
    kind, data = card_read_event(CardRead(TRACK2, b"x", Symbology.KEYBOARD, "keyboard", 0.0))
    assert kind == "card_rejected"
    assert "4111" not in json.dumps(data)


@pytest.mark.anyio
async def test_slow_subscriber_loses_oldest_not_the_publisher() -> None:
    bus = EventBus(queue_size=2)
    with bus.subscribe() as sub:
        for i in range(5):
            bus.publish("n", {"i": i})
        await asyncio.sleep(0)
        first = await sub.get(timeout=1)
        second = await sub.get(timeout=1)
        assert first is not None and second is not None
        assert [first.data["i"], second.data["i"]] == [3, 4]
        assert sub.dropped == 3
    assert bus.subscriber_count == 0
