"""Sync fixtures: a real PostgreSQL server for the session, a server store per test (SQLite
and PostgreSQL), tills (real ``Service`` on their own SQLite ledgers) and a real HTTP server.

PostgreSQL: Debian's ``postgresql`` 15 binaries; ``initdb`` into a temporary directory and
start on a free loopback port as the ``postgres`` OS user (when running as root), stopped at
the end of the session. Skipped with a reason only if the binaries are missing.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from pos_loyalty.bootstrap import open_service
from pos_loyalty.config import load_settings
from pos_loyalty.ledger.replication import Replica
from pos_loyalty.service import Service
from sync.server.app import create_server_app
from sync.server.store import ServerStore

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pos-loyalty-pg-"))
        self.port = free_port()
        self._counter = itertools.count(1)
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        data = self.dir / "data"
        self._run([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"])
        self._run(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(self.dir / "log"),
                "-w",
                "-o",
                f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c max_connections=200",
                "start",
            ]
        )
        self.data = data

    def _run(self, cmd: list[str]) -> None:
        subprocess.run(self.as_user + cmd, check=True, capture_output=True)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        import psycopg

        name = f"t{os.getpid()}_{next(self._counter)}"
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"])
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN} (apt-get install postgresql)")
    pg = Postgres()
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'server.sqlite'}"
    pg: Postgres = request.getfixturevalue("postgres")
    return pg.new_database()


@pytest.fixture
def store(db_url: str) -> Iterator[ServerStore]:
    s = ServerStore(db_url)
    try:
        yield s
    finally:
        s.close()


class LiveServer:
    """uvicorn serving the central server on a free loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def live_server(store: ServerStore) -> Iterator[LiveServer]:
    srv = LiveServer(create_server_app(store, rate=10_000, burst=10_000))
    try:
        yield srv
    finally:
        srv.stop()


@dataclasses.dataclass
class Till:
    service: Service
    replica: Replica
    data_dir: Path
    online: bool = False

    @property
    def terminal_id(self) -> str:
        return self.service.settings.terminal_id


@pytest.fixture
def make_till(tmp_path: Path) -> Iterator[Callable[[str], Till]]:
    tills: list[Till] = []

    def make(terminal_id: str, *, sync_enabled: bool = True, **overrides: Any) -> Till:
        data_dir = tmp_path / terminal_id
        base = load_settings(None, data_dir=data_dir)
        settings = dataclasses.replace(
            base,
            terminal_id=terminal_id,
            sync=dataclasses.replace(
                base.sync, enabled=sync_enabled, server_url="http://127.0.0.1:1"
            ),
            **overrides,
        )
        svc = open_service(settings)
        till = Till(svc, Replica(svc.ledger), data_dir)
        svc.online = lambda: till.online
        tills.append(till)
        return till

    yield make
    for till in tills:
        till.service.ledger.close()
