"""Sync embedded in a till process (agent/terminal): health shows it, limits follow it."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from pos_loyalty.api import create_app
from pos_loyalty.bootstrap import start_embedded_sync
from pos_loyalty.ledger.store import Ledger
from pos_loyalty.service import Profile
from sync.daemon import SyncWorker
from sync.server.store import ServerStore

from .conftest import LiveServer, Till
from .helpers import pair_till, sale


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_embedded_sync_reports_online_and_pushes(
    store: ServerStore, live_server: LiveServer, make_till: Callable[..., Till]
) -> None:
    till = make_till("till-a")
    pair_till(store, till, live_server.url)
    card = till.service.enrol(Profile(name="Eve"))["card"]["code"]
    sale(till.service, card, "R-1")
    embedded = start_embedded_sync(till.service)
    try:
        client = TestClient(create_app(till.service, status=embedded.status))
        deadline = time.monotonic() + 20
        health = client.get("/v1/health").json()
        while not (health["online"] and health["events_waiting"] == 0):
            assert time.monotonic() < deadline, health
            time.sleep(0.1)
            health = client.get("/v1/health").json()
        assert health["sync"]["conflicts"] == 0
        assert till.service.online() is True  # offline limits now lifted
    finally:
        embedded.stop()


def test_embedded_sync_not_configured_or_not_paired(make_till: Callable[..., Till]) -> None:
    standalone = make_till("till-s", sync_enabled=False)
    embedded = start_embedded_sync(standalone.service)
    assert embedded.status()["online"] is False
    assert "not configured" in embedded.note
    unpaired = make_till("till-u")
    embedded = start_embedded_sync(unpaired.service)
    assert "not paired" in embedded.note
    client = TestClient(create_app(unpaired.service, status=embedded.status))
    assert client.get("/v1/health").json()["online"] is False


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_damaged_ledger_pauses_sync_with_a_clear_status(
    store: ServerStore,
    live_server: LiveServer,
    make_till: Callable[..., Till],
    caplog: pytest.LogCaptureFixture,
) -> None:
    till = make_till("till-d")
    pair_till(store, till, live_server.url)
    card = till.service.enrol(Profile(name="Eve"))["card"]["code"]
    sale(till.service, card, "R-1")
    credentials = till.replica.credentials()
    assert credentials is not None
    path = till.service.ledger.path
    till.service.ledger.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        query = "SELECT rootpage FROM sqlite_master WHERE name = 'events'"
        (root,) = conn.execute(query).fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    with path.open("r+b") as f:  # the events table's root page is no b-tree page any more
        f.seek((root - 1) * size)
        f.write(bytes(size))
    ledger = Ledger(path, till.terminal_id)
    worker = SyncWorker(ledger, credentials, data_dir=till.data_dir, interval=0.1)
    caplog.set_level(logging.INFO, logger="sync")
    worker.start_thread()
    try:
        deadline = time.monotonic() + 20
        while worker.status()["sync"]["last_error"] is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        status = worker.status()
        assert "damaged" in status["sync"]["last_error"]
        assert status["online"] is False
    finally:
        worker.stop()
        ledger.close()
    paused = [r for r in caplog.records if "sync paused" in r.getMessage()]
    assert paused and all(r.levelno == logging.ERROR for r in paused)
    assert not any(r.exc_info for r in caplog.records)  # no traceback in the till's log
    assert store.event_ids(credentials.merchant_id) == []  # nothing reached the server
