"""Serial scan latency: last byte written to a pty -> CardRead leaving the driver.

A pty pair stands in for a USB-serial scanner. For each of N scans the bench writes one
CR-terminated code to the master end and measures the time until the driver's sink receives
the ``CardRead`` (drivers.serial_reader.SerialReader: pyserial read, framing, AIM + payment
guard parse, debounce). With ``--stream`` it measures until the read comes out of the asyncio
``ReaderStream`` instead. Baseline: a bare ``select``/``os.read`` loop on a pty in the same
run, timed until it has seen the CR. Target: p99 <= 5 ms.

Usage: python bench/serial_latency.py [-n 1000] [--stream]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import select
import statistics
import sys
import threading
import time
import tty
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drivers.model import CardRead, ReaderState, ReaderStatus  # noqa: E402
from drivers.serial_reader import SerialReader  # noqa: E402
from drivers.stream import ReaderStream  # noqa: E402

TARGET_P99_MS = 5.0


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(0.99 * len(ordered))) - 1]


def _pty() -> tuple[int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    os.close(slave)
    return master, path


def _scan(i: int) -> bytes:
    return f"]C0PL{i:013d}\r".encode()


def bench_baseline(n: int) -> list[float]:
    master, slave = os.openpty()
    tty.setraw(slave)
    seen = threading.Event()
    stop = threading.Event()
    stamp: list[float] = [0.0]

    def loop() -> None:
        buf = b""
        while not stop.is_set():
            ready, _, _ = select.select([slave], [], [], 0.05)
            if not ready:
                continue
            buf += os.read(slave, 4096)
            if b"\r" in buf:
                stamp[0] = time.perf_counter()
                buf = buf.split(b"\r")[-1]
                seen.set()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    samples = []
    for i in range(n):
        seen.clear()
        t0 = time.perf_counter()
        os.write(master, _scan(i))
        if not seen.wait(2):
            raise RuntimeError("baseline lost a scan")
        samples.append(stamp[0] - t0)
    stop.set()
    thread.join()
    os.close(master)
    os.close(slave)
    return samples


def bench_driver(n: int) -> list[float]:
    master, path = _pty()
    got = threading.Event()
    connected = threading.Event()
    stamp: list[float] = [0.0]

    def sink(event: object) -> None:
        if isinstance(event, CardRead):
            stamp[0] = time.perf_counter()
            got.set()
        elif isinstance(event, ReaderStatus) and event.state is ReaderState.CONNECTED:
            connected.set()

    reader = SerialReader("bench", path, {"framing": "cr", "debounce": 0}, sink=sink)
    reader.start()
    if not connected.wait(5):
        raise RuntimeError("the reader did not connect")
    samples = []
    try:
        for i in range(n):
            got.clear()
            t0 = time.perf_counter()
            os.write(master, _scan(i))
            if not got.wait(2):
                raise RuntimeError("the driver lost a scan")
            samples.append(stamp[0] - t0)
    finally:
        reader.close()
        os.close(master)
    return samples


async def _bench_stream(n: int) -> list[float]:
    master, path = _pty()
    stream = ReaderStream.from_config([("bench", "serial", path, {"debounce": 0})])
    samples = []
    async with stream:
        while True:
            event = await stream.get(5)
            if event is None:
                raise RuntimeError("the reader did not connect")
            if isinstance(event, ReaderStatus) and event.state is ReaderState.CONNECTED:
                break
        for i in range(n):
            t0 = time.perf_counter()
            os.write(master, _scan(i))
            while True:
                event = await stream.get(2)
                if event is None:
                    raise RuntimeError("the stream lost a scan")
                if isinstance(event, CardRead):
                    samples.append(time.perf_counter() - t0)
                    break
    os.close(master)
    return samples


def report(label: str, samples: list[float]) -> tuple[float, float]:
    med, high = statistics.median(samples) * 1000, p99(samples) * 1000
    print(f"{label:<28} median {med:7.3f} ms   p99 {high:7.3f} ms   (n={len(samples)})")
    return med, high


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="scans per measurement")
    parser.add_argument("--stream", action="store_true", help="also time the asyncio stream")
    args = parser.parse_args(argv)

    base_med, base_p99 = report("baseline os.read loop", bench_baseline(args.n))
    drv_med, drv_p99 = report("SerialReader -> sink", bench_driver(args.n))
    if args.stream:
        report("SerialReader -> ReaderStream", asyncio.run(_bench_stream(args.n)))
    print(f"ratio driver/baseline: median {drv_med / base_med:.2f}x, p99 {drv_p99 / base_p99:.2f}x")
    ok = drv_p99 <= TARGET_P99_MS
    print(f"target p99 <= {TARGET_P99_MS} ms: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
