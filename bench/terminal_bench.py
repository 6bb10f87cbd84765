"""Benchmarks of the cashier terminal (issue 6), each against a baseline from the same run.

1. Cold start to the scan screen ready (target <= 1.0 s), in a fresh process over an
   existing ledger; baseline: a bare Textual app (one Input) started the same way.
2. Card read to customer view drawn (target <= 50 ms): a read pushed into the reader feed
   until the customer screen has been rendered; baseline: the ledger work alone
   (``lookup`` + ``customer``) in the same process.
3. Resident memory after N sales in one session (default 1,000; target <= 150 MB and flat):
   each sale goes through the screens (scan -> customer -> sale -> quote -> commit ->
   summary -> home); RSS is sampled as it goes; baseline: RSS of the same process with the
   app started and no sale made.

Run: ``.venv/bin/python bench/terminal_bench.py [--sales 1000] [--reads 50] [--starts 5]``.
Exits 1 when a target is missed. Headless (no terminal needed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

START_TARGET_S = 1.0
READ_TARGET_MS = 50.0
RSS_TARGET_MB = 150.0
FLAT_TOLERANCE_MB = 10.0  # growth allowed over the second half of the sales

_CHILD_TERMINAL = """
import time, sys
t0 = float(sys.argv[2])
from pathlib import Path
from pos_loyalty.config import load_settings
from pos_loyalty.bootstrap import open_service
from pos_loyalty.ui import create_terminal_app
service = open_service(load_settings(None, data_dir=Path(sys.argv[1])))
app = create_terminal_app(service)
def ready():
    print(f"READY {time.time() - t0:.4f}", flush=True)
    app.exit()
app.after_start = ready
app.run(headless=True)
"""

_CHILD_BARE = """
import time, sys
t0 = float(sys.argv[2])
from textual.app import App
from textual.widgets import Input
class Bare(App):
    def compose(self):
        yield Input()
    def on_mount(self):
        self.call_after_refresh(self.ready)
    def ready(self):
        print(f"READY {time.time() - t0:.4f}", flush=True)
        self.exit()
Bare().run(headless=True)
"""


def rss_mb() -> float:  # float ok: a measurement
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def cold_start(code: str, data_dir: Path, runs: int) -> float:  # float ok: seconds
    times = []
    for _ in range(runs):
        t0 = time.time()
        out = subprocess.run(
            [sys.executable, "-c", code, str(data_dir), repr(t0)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("READY")]
        if not line:
            raise SystemExit(f"start failed: {out.stderr[-2000:]}")
        times.append(float(line[0].split()[1]))
    return statistics.median(times)


async def reads_and_sales(data_dir: Path, reads: int, sales: int) -> dict[str, Any]:
    from drivers.model import CardRead, Symbology
    from pos_loyalty.bootstrap import open_service
    from pos_loyalty.config import load_settings
    from pos_loyalty.demo import seed_demo
    from pos_loyalty.ui.app import TerminalApp
    from pos_loyalty.ui.customer import CustomerScreen
    from pos_loyalty.ui.readers import QueueFeed
    from pos_loyalty.ui.sale import SaleScreen
    from pos_loyalty.ui.scan import ScanScreen
    from pos_loyalty.ui.summary import SummaryScreen

    service = open_service(load_settings(None, data_dir=data_dir))
    codes = seed_demo(service)
    feed = QueueFeed(["bench"])
    app = TerminalApp(service, readers=feed, status_interval=3600)
    app.quote_delay = 0.001
    out: dict[str, Any] = {}

    async def until(check: Any, timeout: float = 10.0) -> None:  # float ok: seconds
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                text = "\n".join(s.text for s in app.screen._compositor.render_strips())
                raise TimeoutError(f"the terminal did not get there; it shows:\n{text}")
            await asyncio.sleep(0.0005)

    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        out["rss_idle"] = rss_mb()

        # -- ledger work alone (baseline of the read) --
        base = []
        for i in range(reads):
            t = time.perf_counter()
            app._fetch_customer(codes[i % 3])
            base.append((time.perf_counter() - t) * 1000)
        out["read_base_ms"] = statistics.median(base)

        # -- card read to customer view drawn: from the idle scan screen, and while another
        #    customer is shown --
        async def read(i: int) -> float:  # float ok: ms
            before = app.shown_at
            t = time.monotonic()
            feed.put(CardRead(codes[i % 3], b"", Symbology.CODE128, "bench", t))
            await until(lambda: app.shown_at != before)
            assert app.shown_at is not None
            return (app.shown_at - t) * 1000

        from_scan = []
        for i in range(reads):
            await app.go_home()
            await pilot.pause()
            from_scan.append(await read(i))
        next_customer = [await read(i) for i in range(reads)]
        for key, samples in (("scan", from_scan), ("next", next_customer)):
            samples.sort()
            out[f"read_{key}_ms"] = statistics.median(samples)
            out[f"read_{key}_p95_ms"] = samples[max(int(len(samples) * 0.95) - 1, 0)]

        # -- sales in one session --
        await app.go_home()
        await pilot.pause()
        rss = [(0, rss_mb())]
        t_sales = time.perf_counter()
        laps: list[tuple[int, float]] = []  # float ok: seconds
        last = app.shown_at

        def keys(*presses: str) -> None:
            """Key events back to back, as a fast cashier or a wedge scanner types them:
            "enter", "f4", "f9" are keys; anything else is typed character by character."""
            from textual import events
            from textual.keys import _character_to_key

            assert app._driver is not None
            for press in presses:
                if press in ("enter", "f4", "f9"):
                    todo = [(press, "\r" if press == "enter" else None)]
                else:
                    todo = [(c if c.isalnum() else _character_to_key(c), c) for c in press]
                for key, char in todo:
                    event = events.Key(key, char)
                    event.set_sender(app)
                    app._driver.send_message(event)

        for n in range(1, sales + 1):
            # as a cashier at full speed: scan, F4, two items, F9, Enter
            keys(codes[n % 3], "enter")
            await until(
                lambda last=last: isinstance(app.screen, CustomerScreen) and app.shown_at != last
            )
            last = app.shown_at
            keys("f4")
            await until(lambda: isinstance(app.screen, SaleScreen) and app.focused is not None)
            keys("espresso coffee 3.20", "enter", "2x croissant bakery 2.50", "enter")
            await until(lambda: len(app.screen.lines) == 2)  # type: ignore[attr-defined]
            keys("f9")
            await until(lambda: isinstance(app.screen, SummaryScreen))
            keys("enter")
            await until(lambda: isinstance(app.screen, ScanScreen) and app.screen.query("#scan"))
            if n % max(sales // 10, 1) == 0:
                rss.append((n, rss_mb()))
                laps.append((n, time.perf_counter() - t_sales))
        out["sales_s"] = time.perf_counter() - t_sales
        out["rss"] = rss
        out["laps"] = laps
    service.ledger.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sales", type=int, default=1000)
    parser.add_argument("--reads", type=int, default=50)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        # a ledger that exists already (a till starting its day)
        from pos_loyalty.bootstrap import open_service
        from pos_loyalty.config import load_settings
        from pos_loyalty.demo import seed_demo

        svc = open_service(load_settings(None, data_dir=data))
        seed_demo(svc)
        svc.ledger.close()

        bare = cold_start(_CHILD_BARE, data, args.starts)
        term = cold_start(_CHILD_TERMINAL, data, args.starts)
        ok &= term <= START_TARGET_S
        print(f"1. cold start to scan screen ready (median of {args.starts})")
        print(f"   baseline bare Textual app: {bare:.3f} s")
        print(
            f"   terminal:                  {term:.3f} s  (+{term - bare:.3f} s)  "
            f"target <= {START_TARGET_S:.1f} s  {'OK' if term <= START_TARGET_S else 'MISSED'}"
        )

        r = asyncio.run(reads_and_sales(data, args.reads, args.sales))
        print(f"2. card read to customer view drawn ({args.reads} reads each)")
        print(f"   baseline ledger work only: {r['read_base_ms']:.1f} ms (median)")
        for key, what in (("scan", "from the scan screen"), ("next", "customer to customer")):
            med, p95 = r[f"read_{key}_ms"], r[f"read_{key}_p95_ms"]
            ok &= med <= READ_TARGET_MS
            print(
                f"   {what + ':':27}{med:.1f} ms median, {p95:.1f} ms p95  "
                f"target <= {READ_TARGET_MS:.0f} ms  {'OK' if med <= READ_TARGET_MS else 'MISSED'}"
            )

        rss = r["rss"]
        final = rss[-1][1]
        half = [mb for n, mb in rss if n >= args.sales // 2]
        growth = max(half) - min(half) if half else 0.0
        flat = growth <= FLAT_TOLERANCE_MB
        ok &= final <= RSS_TARGET_MB and flat
        print(f"3. resident memory, {args.sales} sales in one session ({r['sales_s']:.1f} s)")
        print(f"   baseline app started, no sale: {r['rss_idle']:.1f} MB")
        print("   " + "  ".join(f"{n}:{mb:.1f}" for n, mb in rss) + "  (sales:MB)")
        print("   " + "  ".join(f"{n}:{s:.0f}" for n, s in r["laps"]) + "  (sales:seconds)")
        print(
            f"   after {args.sales} sales: {final:.1f} MB (+{final - r['rss_idle']:.1f} MB), "
            f"second-half growth {growth:.1f} MB  target <= {RSS_TARGET_MB:.0f} MB and flat "
            f"(<= {FLAT_TOLERANCE_MB:.0f} MB)  "
            f"{'OK' if final <= RSS_TARGET_MB and flat else 'MISSED'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
