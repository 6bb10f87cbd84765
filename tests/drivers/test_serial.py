"""Serial transport on real pty pairs and pyserial URLs: chunking, noise, unplug, re-plug."""

from __future__ import annotations

import asyncio
import os
import queue
import random
import socket
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from drivers.lifecycle import DeviceState, ReaderError
from drivers.model import CardRead, ReaderState, ReaderStatus
from drivers.parse import ParseError
from drivers.serial_reader import SerialReader, find_port
from drivers.stream import ReaderStream, normalise_entry, readers_from_config
from tests.drivers.logcapture import all_logs, assert_not_logged

Event = CardRead | ReaderStatus | ParseError


class FakeDevice:
    """A pty pair whose slave end is reached through a symlink (the configured path)."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = -1
        self.plug()

    def plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        tmp = self.link.with_suffix(".new")
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        os.replace(tmp, self.link)
        os.close(slave)
        self.master = master

    def unplug(self) -> None:
        os.close(self.master)
        self.master = -1

    def write(self, data: bytes) -> None:
        os.write(self.master, data)


class Collector:
    def __init__(self) -> None:
        self.events: queue.Queue[Event] = queue.Queue()

    def __call__(self, event: Event) -> None:
        self.events.put(event)

    def next(self, kind: type, timeout: float = 3.0, state: ReaderState | None = None) -> Event:
        while True:
            event = self.events.get(timeout=timeout)
            if isinstance(event, kind) and (state is None or event.state == state):  # type: ignore[union-attr]
                return event


@pytest.fixture
def device(tmp_path: Path) -> Iterator[FakeDevice]:
    dev = FakeDevice(tmp_path / "ttyScanner")
    yield dev
    if dev.master >= 0:
        dev.unplug()


def _reader(url: str, sink: Collector, **options: object) -> SerialReader:
    opts: dict[str, object] = {"debounce": 0, "reconnect_initial": 0.02, "reconnect_max": 0.1}
    opts.update(options)
    return SerialReader("counter", url, opts, sink=sink)


def test_scans_in_random_chunks_with_garbage_between(device: FakeDevice) -> None:
    sink = Collector()
    reader = _reader(str(device.link), sink, framing="crlf", prefix="\x02", stale_timeout=0.5)
    reader.start()
    try:
        sink.next(ReaderStatus, state=ReaderState.CONNECTED)  # open() flushes: wait for it
        rng = random.Random(4)
        codes = [f"]C0PL{n:013d}" for n in range(40)]
        stream = b""
        for code in codes:
            garbage = bytes(rng.choice(b"\x00\x7f\xffabc\x15\r") for _ in range(rng.randint(0, 9)))
            stream += garbage + b"\x02" + code.encode() + b"\r\n"
        pos = 0
        while pos < len(stream):
            size = rng.randint(1, 17)
            device.write(stream[pos : pos + size])
            pos += size
        got = [sink.next(CardRead) for _ in codes]
        assert [r.text for r in got] == [c[3:] for c in codes]  # type: ignore[union-attr]
        assert all(r.source == "counter" for r in got)
    finally:
        reader.close()


def test_unplug_and_replug_keeps_the_next_scan(device: FakeDevice) -> None:
    sink = Collector()
    reader = _reader(str(device.link), sink)
    reader.start()
    try:
        sink.next(ReaderStatus, state=ReaderState.CONNECTED)
        device.write(b"PL0001\r")
        assert sink.next(CardRead).text == "PL0001"  # type: ignore[union-attr]
        for round_ in range(2):
            device.unplug()
            status = sink.next(ReaderStatus, state=ReaderState.DISCONNECTED)
            assert "unplugged" in status.message or "error" in status.message.lower()  # type: ignore[union-attr]
            sink.next(ReaderStatus, state=ReaderState.RECONNECTING)
            device.plug()  # a new pty at the same configured path
            sink.next(ReaderStatus, state=ReaderState.CONNECTED)
            device.write(f"PL100{round_}\r".encode())
            assert sink.next(CardRead).text == f"PL100{round_}"  # type: ignore[union-attr]
        assert reader.connects == 3
    finally:
        reader.close()


def test_inter_byte_timeout_framing_on_a_pty(device: FakeDevice) -> None:
    sink = Collector()
    reader = _reader(str(device.link), sink, framing="none", inter_byte_timeout=0.03)
    reader.start()
    try:
        sink.next(ReaderStatus, state=ReaderState.CONNECTED)
        device.write(b"]Q1hello")
        read = sink.next(CardRead)
        assert read.text == "hello" and read.aim == "]Q1"  # type: ignore[union-attr]
    finally:
        reader.close()


def test_payment_swipe_over_serial_is_refused_and_not_logged(device: FakeDevice) -> None:
    pan = "5555555555554444"
    sink = Collector()
    with all_logs() as records:
        reader = _reader(str(device.link), sink)
        reader.start()
        try:
            sink.next(ReaderStatus, state=ReaderState.CONNECTED)
            device.write(f"%B{pan}^DOE/JANE^2612101?;{pan}=2612101?\r".encode())
            read = sink.next(CardRead)
        finally:
            reader.close()
    assert read.rejected == "payment_card" and read.text == "" and read.raw == b""  # type: ignore[union-attr]
    assert_not_logged(records, pan)


def test_reads_only_while_enabled(device: FakeDevice) -> None:
    sink = Collector()
    reader = _reader(str(device.link), sink)
    with pytest.raises(ReaderError):
        reader.enable()
    reader.open()
    reader.claim()
    try:
        sink.next(ReaderStatus, state=ReaderState.CONNECTED)
        assert reader.state is DeviceState.CLAIMED
        device.write(b"DROPPED\r")
        time.sleep(0.2)  # the reader reads and drops it while only claimed
        reader.enable()
        device.write(b"KEPT\r")
        assert sink.next(CardRead).text == "KEPT"  # type: ignore[union-attr]
        reader.disable()
        device.write(b"DROPPED2\r")
        time.sleep(0.2)
        reader.enable()
        device.write(b"KEPT2\r")
        assert sink.next(CardRead).text == "KEPT2"  # type: ignore[union-attr]
    finally:
        reader.close()
    # cast: mypy would keep the state narrowed to CLAIMED by the assert above, across close()
    assert cast(DeviceState, reader.state) is DeviceState.CLOSED


def test_debounce_on_the_reader(device: FakeDevice) -> None:
    sink = Collector()
    reader = _reader(str(device.link), sink, debounce=5.0)
    reader.start()
    try:
        sink.next(ReaderStatus, state=ReaderState.CONNECTED)
        device.write(b"SAME\rSAME\rSAME\rOTHER\r")
        assert sink.next(CardRead).text == "SAME"  # type: ignore[union-attr]
        assert sink.next(CardRead).text == "OTHER"  # type: ignore[union-attr]
    finally:
        reader.close()


def test_missing_device_reports_reconnecting_then_connects(tmp_path: Path) -> None:
    sink = Collector()
    link = tmp_path / "ttyLater"
    reader = _reader(str(link), sink)
    reader.start()
    try:
        sink.next(ReaderStatus, state=ReaderState.RECONNECTING)
        dev = FakeDevice(link)
        sink.next(ReaderStatus, state=ReaderState.CONNECTED)
        dev.write(b"LATE\r")
        assert sink.next(CardRead).text == "LATE"  # type: ignore[union-attr]
        dev.unplug()
    finally:
        reader.close()


def test_match_by_vid_pid_serial(device: FakeDevice) -> None:
    ports = [
        SimpleNamespace(device="/dev/ttyACM0", vid=0x0C2E, pid=0x0B61, serial_number="OTHER"),
        SimpleNamespace(device=str(device.link), vid=0x0C2E, pid=0x0B61, serial_number="S123"),
    ]
    assert find_port(0x0C2E, 0x0B61, "S123", ports) == str(device.link)
    assert find_port(0x0C2E, 0x0B61, None, ports) == "/dev/ttyACM0"
    assert find_port(0x1111, 0x0B61, None, ports) is None
    sink = Collector()
    reader = SerialReader(
        "acm",
        None,
        {"vid": "0x0c2e", "pid": 0x0B61, "serial_number": "S123", "debounce": 0},
        sink=sink,
        list_ports=lambda: ports,
    )
    reader.start()
    try:
        sink.next(ReaderStatus, state=ReaderState.CONNECTED)
        device.write(b"BYID\r")
        assert sink.next(CardRead).text == "BYID"  # type: ignore[union-attr]
    finally:
        reader.close()
    with pytest.raises(ValueError):
        SerialReader("bad", None, {"vid": 1})


def test_socket_url_and_disconnect() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    sink = Collector()
    reader = _reader(f"socket://127.0.0.1:{port}", sink)
    reader.start()
    try:
        conn, _ = server.accept()
        sink.next(ReaderStatus, state=ReaderState.CONNECTED)
        conn.sendall(b"]E0036000291452\r")
        read = sink.next(CardRead)
        assert read.text == "0036000291452"  # type: ignore[union-attr]
        conn.close()
        sink.next(ReaderStatus, state=ReaderState.DISCONNECTED)
        conn, _ = server.accept()  # the reader comes back on its own
        sink.next(ReaderStatus, state=ReaderState.CONNECTED)
        conn.sendall(b"AGAIN\r")
        assert sink.next(CardRead).text == "AGAIN"  # type: ignore[union-attr]
        conn.close()
    finally:
        reader.close()
        server.close()


# --- the async stream -----------------------------------------------------------------------


def test_stream_from_config(tmp_path: Path) -> None:
    dev_a = FakeDevice(tmp_path / "ttyA")
    dev_b = FakeDevice(tmp_path / "ttyB")
    entries: list[object] = [
        {"name": "keyboard", "kind": "keyboard"},
        {"name": "a", "kind": "serial", "url": str(dev_a.link), "framing": "cr", "debounce": 0},
        ("b", "serial", str(dev_b.link), {"framing": "lf", "formats": ["qr"], "debounce": 0}),
    ]

    async def main() -> list[object]:
        stream = ReaderStream.from_config(entries, own_prefixes=("990012",), include_errors=True)
        assert [r.name for r in stream.readers] == ["a", "b"]
        seen: list[object] = []
        async with stream:
            connected: set[str] = set()
            while connected != {"a", "b"}:
                event = await stream.get(3)
                assert isinstance(event, ReaderStatus)
                if event.state is ReaderState.CONNECTED:
                    connected.add(event.source)
            dev_a.write(b"PLA\r")
            dev_b.write(b"]Q1PLB\n]C0NOTQR\n")
            async for event in stream:
                seen.append(event)
                if len([e for e in seen if not isinstance(e, ReaderStatus)]) == 3:
                    break
        assert await stream.get(1) is None or True  # stopped: drained then ends
        return seen

    seen = asyncio.run(asyncio.wait_for(main(), 10))
    reads = {(e.source, e.text) for e in seen if isinstance(e, CardRead)}
    assert reads == {("a", "PLA"), ("b", "PLB")}
    errors = [e for e in seen if isinstance(e, ParseError)]
    assert [e.code for e in errors] == ["format_not_enabled"]
    dev_a.unplug()
    dev_b.unplug()


def test_stream_ends_after_stop() -> None:
    async def main() -> list[object]:
        stream = ReaderStream.from_config([("k", "keyboard", None, {})])
        await stream.start()
        asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(stream.stop()))
        return [e async for e in stream]

    assert asyncio.run(asyncio.wait_for(main(), 5)) == []


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        readers_from_config([{"name": "x", "kind": "telepathy"}])
    with pytest.raises(ValueError, match="unique"):
        readers_from_config([("x", "serial", "loop://", {}), ("x", "serial", "loop://", {})])
    with pytest.raises(ValueError):
        readers_from_config([{"kind": "serial"}])
    with pytest.raises(ValueError, match="framing"):
        readers_from_config([("x", "serial", "loop://", {"framing": "semicolon"})])
    cfg = SimpleNamespace(name="n", kind="serial", url="loop://", options={"baudrate": 19200})
    assert normalise_entry(cfg) == ("n", "serial", "loop://", {"baudrate": 19200})
    entry = {"name": "n", "kind": "serial", "url": "loop://", "options": {"a": 1}, "b": 2}
    assert normalise_entry(entry) == ("n", "serial", "loop://", {"a": 1, "b": 2})


def test_loop_url_reader_lifecycle() -> None:
    sink = Collector()
    reader = _reader("loop://", sink)
    reader.start()
    sink.next(ReaderStatus, state=ReaderState.CONNECTED)
    reader.close()
    assert sink.next(ReaderStatus, state=ReaderState.DISCONNECTED).message == "reader released"  # type: ignore[union-attr]


def test_webcam_kind_through_the_stream(tmp_path: Path) -> None:
    """The webcam reader (drivers.webcam) plugs into the same stream via its adapter."""
    cv2 = pytest.importorskip("cv2")
    np = pytest.importorskip("numpy")
    from tests.drivers.synth import qr_image

    code = qr_image("PL0000001234567")
    frame = np.full((480, 640), 255, dtype=np.uint8)
    frame[40 : 40 + code.shape[0], 40 : 40 + code.shape[1]] = code
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 480))
    for _ in range(6):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()

    async def main() -> list[object]:
        stream = ReaderStream.from_config([("cam", "webcam", str(path), {"formats": ["qr"]})])
        events: list[object] = []
        async with stream:
            while (event := await stream.get(5)) is not None:
                events.append(event)
                if isinstance(event, ReaderStatus) and event.state is not ReaderState.CONNECTED:
                    break
        return events

    events = asyncio.run(asyncio.wait_for(main(), 20))
    reads = [e for e in events if isinstance(e, CardRead)]
    assert [(r.text, r.source) for r in reads] == [("PL0000001234567", "cam")]
