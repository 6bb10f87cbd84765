"""A central server restored from an older backup (docs/sync.md, "Restoring the server"):
a till that had pulled further resets its cursor (409 ``cursor_ahead``) instead of skipping
the positions handed out again, and a till whose events the server lost pushes them again
even when it has nothing new (the pull answer carries the server's head of its chain)."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from pos_loyalty.ledger.verify import verify
from sync.bootstrap import bootstrap
from sync.client import SyncFailed
from sync.protocol import make_cursor
from sync.server.app import create_server_app
from sync.server.store import ServerStore, SyncError

from .conftest import LiveServer, Till
from .helpers import append_adjustments, nonzero, pair_till, sync_round, till_balances


class Server:
    """A server (store and HTTP) over one database that can be stopped, backed up and
    restored from that backup: SQLite's backup API, PostgreSQL's template databases."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.start()

    def start(self) -> None:
        self.store = ServerStore(self.db_url)
        self.http = LiveServer(create_server_app(self.store, rate=10_000, burst=10_000))
        self.url = self.http.url

    def stop(self) -> None:
        self.http.stop()
        self.store.close()

    @property
    def name(self) -> str:
        return str(make_url(self.db_url).database)

    def _pg(self, *statements: str) -> None:
        url = make_url(self.db_url)
        with psycopg.connect(
            host=url.host, port=url.port, user=url.username, dbname="postgres", autocommit=True
        ) as conn:
            for statement in statements:
                conn.execute(statement)

    def backup(self) -> None:
        self.stop()
        name = self.name
        if self.store.is_sqlite:
            src = sqlite3.connect(name)
            dst = sqlite3.connect(f"{name}.bak")
            src.backup(dst)
            src.close()
            dst.close()
        else:
            self._pg(f'CREATE DATABASE "{name}_bak" TEMPLATE "{name}"')
        self.start()

    def restore(self) -> None:
        """The disk failed: last night's backup comes back."""
        self.stop()
        name = self.name
        if self.store.is_sqlite:
            for ext in ("-wal", "-shm"):
                Path(f"{name}{ext}").unlink(missing_ok=True)
            shutil.copy(f"{name}.bak", name)
        else:
            self._pg(
                f'DROP DATABASE "{name}"',
                f'CREATE DATABASE "{name}" TEMPLATE "{name}_bak"',
                f'DROP DATABASE "{name}_bak"',
            )
        self.start()


@pytest.fixture
def server(db_url: str) -> Iterator[Server]:
    srv = Server(db_url)
    try:
        yield srv
    finally:
        srv.stop()


def reasons(till: Till) -> list[str]:
    return [c["reason"] for c in till.replica.conflicts()]


def test_a_cursor_past_the_servers_last_position_is_refused(
    server: Server, make_till: Callable[..., Till]
) -> None:
    store = server.store
    a, b = make_till("till-a"), make_till("till-b")
    auth_a = store.authenticate(pair_till(store, a, server.url).credential)
    auth_b = store.authenticate(pair_till(store, b, server.url).credential)
    append_adjustments(a, [("cust-1", 5)] * 2, "earn")
    sync_round(a, server.url)
    assert store.pull(auth_b, make_cursor("m1", 2), 10).events == []
    with pytest.raises(SyncError) as exc:
        store.pull(auth_b, make_cursor("m1", 3), 10)
    assert (exc.value.status, exc.value.code) == (409, "cursor_ahead")
    assert exc.value.extra == {"cursor": make_cursor("m1", 2)}
    # Each pull answer carries the head of the asking till's own chain.
    head_b = store.pull(auth_b, None, 10).head
    head_a = store.pull(auth_a, None, 1).head
    assert head_b is not None and (head_b.epoch, head_b.seq) == (1, 0)
    assert head_a is not None and head_a.seq == 2


def test_tills_ahead_of_a_restored_server_get_the_events_given_their_positions_again(
    server: Server, make_till: Callable[..., Till]
) -> None:
    a, b, c = make_till("till-a"), make_till("till-b"), make_till("till-c")
    for till in (a, b, c):
        pair_till(server.store, till, server.url)
    append_adjustments(a, [("cust-1", 100)] * 3, "earn")
    for till in (a, b, c):
        sync_round(till, server.url)
    server.backup()  # the nightly backup
    append_adjustments(a, [("cust-1", 10)] * 5, "earn")
    sync_round(a, server.url)
    sync_round(b, server.url)  # b's cursor is now 5 positions past the backup
    server.restore()
    append_adjustments(c, [("cust-2", 7)] * 5, "earn")  # new events, at positions 4..8 again
    sync_round(c, server.url)
    for _ in range(2):
        for till in (a, b, c):
            sync_round(till, server.url)
    balances = nonzero(server.store.balances("m1"))
    assert balances == {("cust-1", "points", "points"): 350, ("cust-2", "points", "points"): 35}
    for till in (a, b, c):
        assert till_balances(till) == balances, till.terminal_id
        assert verify(till.service.ledger).ok
    # What each till noticed, recorded for whoever looks at its sync conflicts.
    assert reasons(b) == ["cursor_ahead"]  # b had pulled past the backup
    assert reasons(a) == ["cursor_ahead", "server_behind"]  # a pulled and pushed past it
    assert reasons(c) == []
    (note,) = b.replica.conflicts()
    assert "pull cursor m1:8~" in note["message"] and "reset to the start" in note["message"]


def test_an_idle_till_pushes_again_what_a_restored_server_lost(
    server: Server, make_till: Callable[..., Till]
) -> None:
    a, b = make_till("till-a"), make_till("till-b")
    pair_till(server.store, a, server.url)
    pair_till(server.store, b, server.url)
    append_adjustments(a, [("cust-1", 100)], "earn")
    sync_round(a, server.url)
    server.backup()
    append_adjustments(a, [("cust-1", 10)] * 4, "earn")
    sync_round(a, server.url)
    assert a.replica.waiting() == 0
    server.restore()
    # a has nothing new to push (closed for the day): its round still mends the server.
    result = sync_round(a, server.url)
    assert result.accepted == 4
    assert nonzero(server.store.balances("m1")) == till_balances(a)
    # (a had also pulled past the backup: its own events' positions)
    assert reasons(a) == ["cursor_ahead", "server_behind"]
    assert "up to seq 1, it had acknowledged up to 5" in a.replica.conflicts()[1]["message"]
    sync_round(a, server.url)  # nothing more to do
    assert reasons(a) == ["cursor_ahead", "server_behind"]
    sync_round(b, server.url)
    assert till_balances(b) == till_balances(a) == {("cust-1", "points", "points"): 140}


def test_a_till_bootstrapped_after_the_backup_fails_clearly_instead_of_skipping(
    server: Server, make_till: Callable[..., Till]
) -> None:
    a, d = make_till("till-a"), make_till("till-d")
    pair_till(server.store, a, server.url)
    creds = pair_till(server.store, d, server.url)  # paired, not loaded yet
    append_adjustments(a, [("cust-1", 100)] * 2, "earn")
    sync_round(a, server.url)
    server.backup()
    append_adjustments(a, [("cust-1", 10)] * 3, "earn")
    sync_round(a, server.url)
    bootstrap(d.replica, replace(creds, server_url=server.url))  # a snapshot at position 5
    server.restore()
    for _ in range(2):  # the same clear refusal each round; nothing applied, nothing skipped
        with pytest.raises(SyncFailed) as exc:
            sync_round(d, server.url)
        assert exc.value.code == "cursor_ahead" and "bootstrap it again" in str(exc.value)
    assert d.replica.state().cursor == "m1:5"
    sync_round(a, server.url)  # the other tills are mended as usual
    assert nonzero(server.store.balances("m1")) == till_balances(a)
