"""The server's database failing while the server runs: PostgreSQL refusing connections (a
restart, an administrator closing the database), a SQLite file damaged on disk. Every request
that needs it answers a JSON 503 `database_unavailable` (the driver's words go to the log, in
one line, not a traceback per request), `/v1/sync/health` says so too, the till keeps its
events waiting, and once the database is back everything carries on as if nothing happened.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from pos_loyalty.ledger.verify import verify
from pos_loyalty.service import Profile
from sync.client import SyncFailed
from sync.server.app import create_server_app
from sync.server.store import ServerStore, database_trouble

from ..ledger.test_damage import damage, files
from .conftest import LiveServer, Postgres, Till
from .helpers import event_ids, nonzero, pair_till, sale, sync_round, till_balances


@pytest.fixture
def server_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO)
    yield caplog


def _served(store: ServerStore) -> LiveServer:
    return LiveServer(create_server_app(store, rate=10_000, burst=10_000))


def _health(server: LiveServer) -> httpx.Response:
    return httpx.get(server.url + "/v1/sync/health", timeout=10.0)


def _assert_unavailable(response: httpx.Response, *hidden: str) -> None:
    assert response.status_code == 503
    body = response.json()["error"]
    assert body["code"] == "database_unavailable"
    for word in hidden:  # database names, paths: for the operator's log only
        assert word not in body["message"]


def _push_refused(till: Till) -> None:
    waiting = till.replica.state().acked_seq
    with pytest.raises(SyncFailed) as caught:
        sync_round(till)
    assert not caught.value.reachable  # a 5xx: back off and retry, nothing to fix at the till
    assert "503" in str(caught.value)
    assert till.replica.state().acked_seq == waiting  # nothing marked synced


def _one_line_each(logs: pytest.LogCaptureFixture, *words: str) -> None:
    lines = [r for r in logs.records if "database unavailable" in r.getMessage()]
    assert lines, "the outage was not logged"
    for record in lines:
        assert record.levelno == logging.ERROR
        assert record.exc_info is None and "\n" not in record.getMessage()
        for word in words:
            assert word in record.getMessage()
    tracebacks = [r for r in logs.records if r.exc_info is not None]
    assert tracebacks == [], [r.getMessage() for r in tracebacks]


def _connections(pg: Postgres, database: str, allowed: bool) -> None:
    """Open or close ``database`` to new connections; closing also ends the open ones (what a
    server restart or an administrator's maintenance does to the sync server)."""
    import psycopg

    with psycopg.connect(
        f"host=127.0.0.1 port={pg.port} user=postgres dbname=postgres", autocommit=True
    ) as conn:
        conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (database,),
            )


def test_postgresql_refusing_connections_is_a_503_until_it_is_back(
    postgres: Postgres,
    make_till: Callable[..., Till],
    server_logs: pytest.LogCaptureFixture,
) -> None:
    url = postgres.new_database()
    database = url.rsplit("/", 1)[1]
    store = ServerStore(url)
    server = _served(store)
    try:
        till = make_till("till-a")
        pair_till(store, till, server.url)
        card = till.service.enrol(Profile(name="Eve"))["card"]["code"]
        sale(till.service, card, "A-1", price=5000)
        assert _health(server).status_code == 200

        _connections(postgres, database, allowed=False)
        try:
            _assert_unavailable(_health(server), database)
            _push_refused(till)
            # The till sells on meanwhile.
            sale(till.service, card, "A-2", price=2000)
            assert store.database_problem() is not None
            _one_line_each(server_logs, "not currently accepting connections")
        finally:
            _connections(postgres, database, allowed=True)

        assert _health(server).json() == {"ok": True, "protocol": 1}
        result = sync_round(till)
        assert result.accepted == result.pushed == len(event_ids(till))
        assert set(store.event_ids("m1")) == event_ids(till)
        assert nonzero(store.balances("m1")) == nonzero(till_balances(till))
        assert verify(till.service.ledger).ok
    finally:
        server.stop()
        store.close()


def test_a_damaged_sqlite_file_is_a_503_not_a_traceback(
    tmp_path: Path,
    make_till: Callable[..., Till],
    server_logs: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "server.sqlite"
    store = ServerStore(f"sqlite:///{path}")
    server = _served(store)
    try:
        till = make_till("till-a")
        pair_till(store, till, server.url)
        card = till.service.enrol(Profile(name="Eve"))["card"]["code"]
        sale(till.service, card, "A-1", price=5000)
        sync_round(till)
        sale(till.service, card, "A-2", price=2000)

        # Every page in the main file, then pages overwritten behind the server's back; the
        # pool's connections are dropped so that no page is served from their caches.
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        damage(path, "events")
        store.engine.dispose()
        damaged = files(path)

        _push_refused(till)
        assert files(path) == damaged  # nothing written
        assert _health(server).status_code == 200  # it reads the merchants, still whole
        damage(path, "merchants")
        store.engine.dispose()
        _assert_unavailable(_health(server), str(path))
        _one_line_each(server_logs, "malformed")
    finally:
        server.stop()
        store.close()


def _sqlite_error(cls: type[sqlite3.Error], message: str, name: str) -> sqlite3.Error:
    exc = cls(message)
    exc.sqlite_errorname = name  # as sqlite3 sets it when it raises
    return exc


def test_what_counts_as_the_database_being_unavailable() -> None:
    """Failures of the database itself, not faults of a request or of the code."""
    import psycopg

    locked = _sqlite_error(sqlite3.OperationalError, "database is locked", "SQLITE_BUSY")
    assert database_trouble(locked) == "database is locked"
    damaged = _sqlite_error(sqlite3.DatabaseError, "disk image is malformed", "SQLITE_CORRUPT")
    assert database_trouble(damaged)
    full = _sqlite_error(sqlite3.OperationalError, "database or disk is full", "SQLITE_FULL")
    assert database_trouble(full)
    assert database_trouble(psycopg.OperationalError("connection failed:\n  refused"))
    assert database_trouble(PoolTimeout("QueuePool limit of size 10 overflow 20 reached")) == (
        "no database connection free: QueuePool limit of size 10 overflow 20 reached"
    )
    # A wrong statement is a bug (500), not an outage the tills should wait out.
    assert (
        database_trouble(
            _sqlite_error(sqlite3.OperationalError, "no such table: x", "SQLITE_ERROR")
        )
        is None
    )
    constraint = _sqlite_error(
        sqlite3.IntegrityError, "UNIQUE constraint failed", "SQLITE_CONSTRAINT"
    )
    assert database_trouble(constraint) is None
    assert database_trouble(IntegrityError("INSERT", {}, constraint)) is None
    assert database_trouble(ValueError("not the database")) is None


def test_health_does_not_queue_behind_a_writer_and_is_rate_limited(tmp_path: Path) -> None:
    """A health probe only reads: on SQLite it must not wait for the write lock a push (or
    here another process) holds. It needs no credentials, so it is rate-limited per client."""
    path = tmp_path / "server.sqlite"
    store = ServerStore(f"sqlite:///{path}")
    server = LiveServer(create_server_app(store, rate=0.001, burst=3))
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # the write lock, held
        assert _health(server).json() == {"ok": True, "protocol": 1}
        writer.execute("ROLLBACK")
        answers = [_health(server).status_code for _ in range(3)]
        assert answers == [200, 200, 429]
    finally:
        writer.close()
        server.stop()
        store.close()


def test_a_fault_in_the_server_is_a_500_logged_once_with_its_traceback(
    tmp_path: Path, server_logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ServerStore(f"sqlite:///{tmp_path / 'server.sqlite'}")
    server = _served(store)
    uvicorn_log = logging.getLogger("uvicorn.error")  # its own handlers; watched here too
    uvicorn_log.addHandler(server_logs.handler)
    try:
        token = store.create_pairing_token("till-a", "m1", "s1")
        credential = httpx.post(f"{server.url}/v1/sync/pair", json={"token": token}).json()[
            "credential"
        ]

        def broken(*_: object, **__: object) -> None:
            raise RuntimeError("a bug in the pull")

        monkeypatch.setattr(store, "pull", broken)
        r = httpx.get(
            f"{server.url}/v1/sync/pull", headers={"authorization": f"Bearer {credential}"}
        )
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
        assert "a bug" not in r.text
    finally:
        uvicorn_log.removeHandler(server_logs.handler)
        server.stop()
        store.close()
    faults = [r for r in server_logs.records if r.exc_info is not None]
    assert [r.getMessage() for r in faults] == ["internal error in /v1/sync/pull: RuntimeError"]
    assert "Exception in ASGI application" not in server_logs.text
