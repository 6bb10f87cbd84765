"""A small TCP proxy for HTTP/1.1 that misbehaves on purpose (one request per connection).

Modes, chosen at random per request with the given weights: ``ok``, ``delay``,
``drop_request`` (close before forwarding), ``cut_body`` (forward half of the body, then cut
both sides), ``drop_response`` (the server processed it; the answer is thrown away) and
``duplicate`` (the request reaches the server twice; the second answer is returned).
A server that is down (refused or cut connection) closes the till's connection too.
``inflight`` counts requests forwarded and not answered yet (a test kills the server while
one is being processed).
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter


async def _read_message(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return head + body


def _close_header(message: bytes) -> bytes:
    head, sep, body = message.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines, b"Connection: close"]) + sep + body


class FaultProxy:
    def __init__(self, upstream_port: int, weights: dict[str, float], seed: int = 0) -> None:
        self.upstream_port = upstream_port
        self.weights = weights
        self.enabled = True
        self.random = random.Random(seed)
        self.counts: Counter[str] = Counter()
        self.inflight: Counter[str] = Counter()  # request path -> forwarded, not answered
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._started.wait(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._server = server
        self._started.set()
        self._loop.run_forever()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _mode(self) -> str:
        if not self.enabled:
            return "ok"
        names = list(self.weights)
        return self.random.choices(names, [self.weights[n] for n in names])[0]

    async def _forward(self, request: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        path = request.split(b" ", 2)[1].split(b"?")[0].decode(errors="replace")
        self.inflight[path] += 1
        try:
            writer.write(_close_header(request))
            await writer.drain()
            return await _read_message(reader)
        finally:
            self.inflight[path] -= 1
            writer.close()

    def busy(self, path: str | None = None) -> bool:
        """Whether a request (to ``path``) was forwarded and is not answered yet."""
        counts = dict(self.inflight)  # (updated by the proxy's thread)
        return any(n > 0 for p, n in counts.items() if path is None or p == path)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_message(reader)
            mode = self._mode()
            self.counts[mode] += 1
            if mode == "drop_request":
                return
            if mode == "cut_body":
                _, upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
                upstream.write(request[: max(1, len(request) // 2)])
                await upstream.drain()
                upstream.close()
                return
            if mode == "delay":
                await asyncio.sleep(self.random.uniform(0.01, 0.15))
            response = await self._forward(request)
            if mode == "duplicate":
                response = await self._forward(request)
            if mode == "drop_response":
                return
            writer.write(_close_header(response))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            writer.close()
