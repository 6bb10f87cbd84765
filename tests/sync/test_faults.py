"""Fault injection (issue 5): a misbehaving proxy between tills and the server (dropped
requests, answers dropped after the server committed, delays, duplicates, bodies cut
mid-way), SIGKILLed sync processes and a SIGKILLed central server. Every event ends up on
the server exactly once; every till converges to the server's balances.

``test_server_sigkilled_under_faults`` is the issue's acceptance run, at full size by
default: a real ``pos-loyalty server`` process on PostgreSQL, SIGKILLed (at least 5 times
while it processes a push) and restarted, ``pos-loyalty sync`` processes SIGKILLed, every
request through the faulty proxy, 3 tills and ``SYNC_FAULT_EVENTS`` events (default
10,000; 25-45 s on a busy 2-core machine). The tills' events are real ledger events
(sequence, hash chain, projections): a few sales through the service and batches of points
adjustments appended through the ledger (~0.2 ms an event against ~4 ms for a sale through
the service). The SQLite test through the proxy makes its events by sales only:
``SYNC_FAULT_SALES`` of them (default 600)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from pos_loyalty.config import embedded_default_text
from pos_loyalty.ledger.verify import verify
from pos_loyalty.service import Profile
from sync.client import SyncFailed
from sync.server.store import ServerStore

from .conftest import LiveServer, Postgres, Till, free_port
from .faultproxy import FaultProxy
from .helpers import (
    append_adjustments,
    event_ids,
    nonzero,
    pair_till,
    sale,
    serve,
    sync_round,
    till_balances,
)

WEIGHTS: dict[str, float] = {
    "ok": 4,
    "delay": 1,
    "drop_request": 1,
    "cut_body": 1,
    "drop_response": 1,
    "duplicate": 1,
}


def converge(tills: list[Till], url: str, store: ServerStore) -> None:
    for _ in range(2):
        for till in tills:
            sync_round(till, url)
    server = nonzero(store.balances("m1"))
    union: set[str] = set()
    for till in tills:
        assert till.replica.waiting() == 0
        assert nonzero(till_balances(till)) == server
        report = verify(till.service.ledger)
        assert report.ok, report.problems
        union |= event_ids(till)
    ids = store.event_ids("m1")
    assert len(ids) == len(set(ids)) and set(ids) == union


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_proxy_faults_nothing_lost_nothing_doubled(
    store: ServerStore, live_server: LiveServer, make_till: Callable[..., Till]
) -> None:
    total = int(os.environ.get("SYNC_FAULT_SALES", "600"))
    proxy = FaultProxy(live_server.port, WEIGHTS, seed=7)
    try:
        tills = [make_till(f"f{i}") for i in range(3)]
        for till in tills:
            pair_till(store, till, live_server.url)
        cards = [tills[0].service.enrol(Profile(name=f"c{i}"))["card"]["code"] for i in range(5)]
        for till in tills:
            sync_round(till, live_server.url)
        rng = random.Random(1)
        made, failures, n = 0, 0, 0
        while made < total:
            for till in tills:
                for _ in range(rng.randint(1, 40)):
                    n += 1
                    sale(till.service, rng.choice(cards), f"{till.terminal_id}-{n}", price=300)
                    made += 1
                try:
                    sync_round(till, proxy.url)
                except SyncFailed:
                    failures += 1
        assert failures > 0 and proxy.counts["drop_response"] > 0
        proxy.enabled = False
        converge(tills, proxy.url, store)
    finally:
        proxy.stop()


def _config(root: Path, terminal: str) -> Path:
    text = embedded_default_text().replace('id = "till-1"', f'id = "{terminal}"', 1)
    path = root / f"{terminal}.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sigkilled_sync_processes_resume(
    store: ServerStore, live_server: LiveServer, make_till: Callable[..., Till], tmp_path: Path
) -> None:
    tills = [make_till(f"k{i}") for i in range(3)]
    for till in tills:
        pair_till(store, till, live_server.url)
    card = tills[0].service.enrol(Profile(name="k"))["card"]["code"]
    sync_round(tills[0], live_server.url)
    for till in tills:
        sync_round(till, live_server.url)
        for i in range(300):
            sale(till.service, card, f"{till.terminal_id}-{i}", price=200)
    rng = random.Random(3)
    kills = 0
    for _ in range(4):
        for till in tills:
            config = _config(tmp_path, till.terminal_id)
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pos_loyalty.cli",
                    "--config",
                    str(config),
                    "--data-dir",
                    str(till.data_dir),
                    "sync",
                    "--once",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(rng.uniform(0.3, 1.2))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
    assert kills > 0
    converge(tills, live_server.url, store)


PUSH = "/v1/sync/push"


class ServerProcess:
    """``pos-loyalty server --db URL --port N`` in a child process, SIGKILLed and restarted
    on the same port."""

    def __init__(self, db_url: str, data_dir: Path) -> None:
        self.db_url = db_url
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "server.log"
        data_dir.mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 60.0) -> None:
        self.proc = serve(self.db_url, self.data_dir, self.port, timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


class Chaos(threading.Thread):
    """SIGKILLs the server when armed, at a random moment while a request is being
    processed (one forwarded by the proxy and not answered yet), then restarts it."""

    def __init__(self, server: ServerProcess, proxy: FaultProxy, seed: int) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.proxy = proxy
        self.random = random.Random(seed)
        self.armed = threading.Event()
        self.stopping = threading.Event()
        self.kills = 0
        self.kills_in_flight: Counter[str] = Counter()  # request path -> kills during one
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                if not self.armed.wait(0.05):
                    continue
                deadline = time.monotonic() + 5.0  # a push preferably: it writes
                while not self.proxy.busy(PUSH) and time.monotonic() < deadline:
                    time.sleep(0.001)
                time.sleep(self.random.uniform(0.0, 0.03))  # somewhere inside the request
                busy = [p for p, n in dict(self.proxy.inflight).items() if n > 0]
                self.server.kill()
                self.kills += 1
                self.kills_in_flight.update(busy)
                time.sleep(self.random.uniform(0.0, 0.3))  # down for a while
                self.server.start()
                self.armed.clear()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def stop(self) -> None:
        self.stopping.set()
        self.join(120)


def _adjustments(till: Till, customers: list[str], n: int, rng: random.Random) -> None:
    """``n`` points adjustments of this till, some negative, in one transaction."""
    points = [(rng.choice(customers), rng.choice([-2, 1, 3, 5, 8])) for _ in range(n)]
    append_adjustments(till, points, "fault test")


def _sync_process(till: Till, root: Path, url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pos_loyalty.cli", "--config", str(_config(root, till.terminal_id))]
        + ["--data-dir", str(till.data_dir), "sync", "--once", "--server", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _server_postings(store: ServerStore) -> Counter[tuple[str, str, str]]:
    """The balances the server's stored events add up to (its projection, rebuilt)."""
    from sqlalchemy import select

    from sync.server import schema

    total: Counter[tuple[str, str, str]] = Counter()
    with store.engine.connect() as conn:
        for row in conn.execute(
            select(schema.events.c.customer_id, schema.events.c.payload).where(
                schema.events.c.merchant_id == "m1"
            )
        ):
            if row.customer_id:
                for p in json.loads(row.payload)["p"]:
                    total[(row.customer_id, p["program"], p["unit"])] += int(p["delta"])
    return total


def test_server_sigkilled_under_faults(
    postgres: Postgres, make_till: Callable[..., Till], tmp_path: Path
) -> None:
    total = int(os.environ.get("SYNC_FAULT_EVENTS", "10000"))
    db_url = postgres.new_database()
    store = ServerStore(db_url)
    server = ServerProcess(db_url, tmp_path / "server")
    server.start()
    proxy = FaultProxy(server.port, WEIGHTS, seed=11)
    chaos = Chaos(server, proxy, seed=5)
    rng = random.Random(2)
    try:
        tills = [make_till(f"s{i}") for i in range(3)]
        for till in tills:
            pair_till(store, till, server.url)
        enrolled = [tills[0].service.enrol(Profile(name=f"c{i}")) for i in range(8)]
        cards = [e["card"]["code"] for e in enrolled]
        customers = [e["customer_id"] for e in enrolled]
        for till in [*tills, tills[0]]:
            sync_round(till, server.url)  # every till knows the customers
        chaos.start()
        failures, receipts, sync_kills, sync_runs = 0, 0, 0, 0

        def heads() -> int:  # events made by the tills (own chains)
            n = 0
            for t in tills:
                with t.service.ledger.reader() as tx:
                    n += tx.head()[0]
            return n

        while heads() < total or chaos.kills_in_flight[PUSH] < 5 or sync_kills < 2:
            assert chaos.error is None, chaos.error
            assert chaos.kills < 40, f"no kill during a push: {chaos.kills_in_flight}"
            if not chaos.armed.is_set() and rng.random() < 0.5:
                chaos.armed.set()  # kill the server during one of the next requests
            for till in tills:
                # (past the total, a few events a round: the kills still hit pushes)
                room = max(total - heads(), 20)
                for _ in range(min(rng.randint(0, 3), room)):
                    receipts += 1
                    sale(till.service, rng.choice(cards), f"{till.terminal_id}-{receipts}")
                _adjustments(till, customers, min(rng.randint(20, 250), room), rng)
                if sync_kills < 2 and rng.random() < 0.15:
                    # a `pos-loyalty sync` process, SIGKILLed at a random moment
                    sync_runs += 1
                    proc = _sync_process(till, tmp_path, proxy.url)
                    try:
                        proc.wait(rng.uniform(0.5, 2.0))
                    except subprocess.TimeoutExpired:
                        proc.send_signal(signal.SIGKILL)
                        proc.wait()
                        sync_kills += 1
                    continue
                try:
                    sync_round(till, proxy.url)
                except SyncFailed:
                    failures += 1
            assert sync_runs < 60, "no sync process was ever caught running"
        chaos.stop()
        print(  # the run's faults, shown with -s
            f"server kills {chaos.kills} (during requests: {dict(chaos.kills_in_flight)}), "
            f"sync processes killed {sync_kills}/{sync_runs}, failed rounds {failures}, "
            f"sales {receipts}, proxy {dict(proxy.counts)}"
        )
        assert chaos.error is None, chaos.error
        assert failures > 0 and proxy.counts["drop_response"] > 0
        proxy.enabled = False
        if server.proc is None or server.proc.poll() is not None:
            server.start()
        converge(tills, server.url, store)
        # Exactly once: one server event per till event, nothing quarantined or forked.
        made = heads()
        assert made >= total and len(store.event_ids("m1")) == made
        assert [c["reason"] for c in store.conflicts("m1")] == []
        # The server's projection is exactly what its events add up to (no half-applied
        # batch survived a kill).
        assert nonzero(dict(_server_postings(store))) == nonzero(store.balances("m1"))
    finally:
        chaos.stopping.set()
        if chaos.is_alive():
            chaos.join(120)
        proxy.stop()
        server.kill()
        store.close()


def test_one_worker_per_ledger(tmp_path: Path) -> None:
    from sync.daemon import AlreadyRunning, LedgerLock

    first = LedgerLock(tmp_path)
    first.acquire()
    with pytest.raises(AlreadyRunning):
        LedgerLock(tmp_path).acquire()
    first.release()
    LedgerLock(tmp_path).acquire()
