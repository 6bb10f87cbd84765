"""``pos-loyalty server --workers N``: several processes serve one port and one PostgreSQL
database; tills pushing at once through them end with every event stored once and the same
balances everywhere; the workers stop with their supervisor, even when it is SIGKILLed."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from pos_loyalty.cli import main
from pos_loyalty.service import Profile
from sync.bootstrap import bootstrap
from sync.server.store import ServerStore

from .conftest import Till, free_port
from .helpers import (
    append_adjustments,
    at_once,
    nonzero,
    pair_till,
    serve,
    sync_round,
    till_balances,
)


class Workers:
    """``pos-loyalty server --workers N`` in a child process (the supervisor)."""

    def __init__(self, db_url: str, data_dir: Path, workers: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = serve(db_url, data_dir, self.port, ["--workers", str(workers)])
        deadline = time.monotonic() + 30
        # Health answered: the port is served; wait until every worker has started.
        while len(self.workers()) < workers and time.monotonic() < deadline:
            time.sleep(0.05)

    def workers(self) -> list[int]:
        """Pids of the live worker processes (children running uvicorn's spawned worker)."""
        return [
            pid
            for pid in _children(self.proc.pid)
            if b"multiprocessing.spawn" in _cmdline(pid) and _alive(pid)
        ]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for a parent that will never reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# Worker processes need PostgreSQL: the conftest's ``db_url`` and ``store`` on it alone.
on_postgres = pytest.mark.parametrize("db_url", ["postgres"], indirect=True)


@on_postgres
def test_tills_pushing_at_once_through_two_workers_converge(
    db_url: str,
    store: ServerStore,
    make_till: Callable[..., Till],
    tmp_path: Path,
) -> None:
    server = Workers(db_url, tmp_path / "server", workers=2)
    try:
        assert len(server.workers()) == 2
        tills = [make_till(f"till-{i}") for i in range(3)]
        for till in tills:
            pair_till(store, till, server.url)
        home = tills[0]
        customers = [
            str(home.service.enrol(Profile(name=f"C{i}"))["customer_id"]) for i in range(8)
        ]
        sync_round(home, server.url)
        for till in tills[1:]:
            sync_round(till, server.url)  # every till knows the customers
        for n, till in enumerate(tills):
            append_adjustments(
                till, [(customers[(n + i) % 8], 1 + i % 5) for i in range(600)], "workers"
            )
        results: dict[str, int] = {}

        def push(till: Till) -> None:
            results[till.terminal_id] = sync_round(till, server.url).accepted

        at_once(push, tills)
        assert results == {t.terminal_id: 600 for t in tills}
        for till in tills:
            sync_round(till, server.url)  # pull what the others pushed
        on_server = store.balances("m1")
        for till in tills:
            assert till_balances(till) == nonzero(on_server)
        # 8 enrolments (+ their cards and welcome points) and 3 x 600 adjustments, once each.
        assert sum(on_server[(c, "points", "points")] for c in customers) == 8 * 50 + 3 * sum(
            1 + i % 5 for i in range(600)
        )
        # A new till starts from the snapshot a worker serves (folded from the one the
        # supervisor keeps saved, plus what came after it): the same balances.
        fresh = make_till("till-new")
        creds = pair_till(store, fresh, server.url)
        loaded = bootstrap(fresh.replica, creds, page=3)
        assert loaded.customers == 8
        assert till_balances(fresh) == nonzero(on_server)
        workers = server.workers()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        assert _gone(workers, 10)
    finally:
        server.stop()


@on_postgres
def test_workers_stop_when_their_supervisor_is_killed(db_url: str, tmp_path: Path) -> None:
    server = Workers(db_url, tmp_path / "server", workers=2)
    workers = server.workers()
    try:
        assert len(workers) == 2
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        assert _gone(workers, 15), "a worker outlived its supervisor"
        with pytest.raises(httpx.HTTPError):
            httpx.get(server.url + "/v1/sync/health", timeout=2.0)
    finally:
        server.stop()
        for pid in workers:  # never leave one behind, even when the test failed
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("workers", "message"),
    [
        ("2", "--workers above 1 needs a PostgreSQL database"),
        ("0", "--workers must be between 1 and 64"),
        ("65", "--workers must be between 1 and 64"),
    ],
)
def test_bad_worker_counts_are_refused(
    workers: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'server.sqlite'}"
    code = main(["--data-dir", str(tmp_path), "server", "--db", url, "--workers", workers])
    assert code == 2
    assert message in capsys.readouterr().err
