"""A ledger file damaged on disk (a torn write, an overwritten page): `ledger verify` finds it,
every command says so in one line, the plugin API answers a JSON 503, and nothing is written.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from pos_loyalty import cli
from pos_loyalty.api import create_app
from pos_loyalty.ledger.store import LedgerDamaged, LedgerError, damage_reason
from pos_loyalty.service import Profile, Service
from pos_loyalty.ui.text import plain_error

from .test_ledger import T0, busy_ledger, open_service, sale


def build(data_dir: Path) -> tuple[Path, str, str]:
    """A closed, checkpointed demo ledger with history: (file, a card, its customer)."""
    service, card = busy_ledger(data_dir)
    customer = service.lookup(card)["customer"]["id"]
    path = service.ledger.path
    service.ledger.close()
    with sqlite3.connect(path) as conn:  # every page in the main file, the WAL empty
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path, card, customer


def damage(path: Path, name: str) -> bytes:
    """Overwrite the root page of table or index ``name`` with bytes that are no b-tree page
    (its first byte, the page type, becomes 0); the file's new content."""
    with sqlite3.connect(path) as conn:
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)
        ).fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    with path.open("r+b") as f:
        f.seek((root - 1) * size)
        f.write(bytes(range(256)) * (size // 256))
    return path.read_bytes()


def files(path: Path) -> tuple[bytes, bytes]:
    """The ledger and its write-ahead log as they are on disk (a missing log is an empty one;
    the shared-memory index is not content)."""
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes(), wal.read_bytes() if wal.exists() else b""


def run(capsys: pytest.CaptureFixture[str], data_dir: Path, *args: str) -> tuple[int, str]:
    code = cli.main(["--data-dir", str(data_dir), *args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) <= 1, err
    return code, err


TARGETS = ["events", "ix_events_customer", "cards", "balances", "lots", "receipts"]


@pytest.mark.parametrize("target", TARGETS)
def test_verify_names_a_damaged_page_and_rebuild_refuses(
    tmp_path: Path, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _, _ = build(tmp_path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    damage(path, target)
    before = files(path)

    code, err = run(capsys, tmp_path, "ledger", "verify")
    assert code == 1
    assert "damaged" in err
    assert files(path) == before

    code, err = run(capsys, tmp_path, "ledger", "rebuild")
    assert code == 1
    assert "damaged" in err
    assert files(path) == before


@pytest.mark.parametrize("target", TARGETS)
def test_commands_on_a_damaged_ledger_say_so_and_change_nothing(
    tmp_path: Path, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each command either works (the damage is in a part it does not read) or fails in one
    line, with the file left as it was."""
    path, card, customer = build(tmp_path)
    damage(path, target)
    for args in (
        ("history", customer),
        ("card", "show", card),
        ("sale", "--card", card, "--receipt", "R-new", "--line", "latte:coffee:1:450"),
        ("enrol", "--name", "Cleo"),
    ):
        before = files(path)
        code, err = run(capsys, tmp_path, *args)
        if code != 0:
            assert files(path) == before, args
            assert err.startswith("pos-loyalty: "), err


def test_a_sale_on_a_damaged_events_table_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, card, _ = build(tmp_path)
    damage(path, "events")
    before = files(path)
    code, err = run(
        capsys, tmp_path, "sale", "--card", card, "--receipt", "R-new", "--line", "x:coffee:1:450"
    )
    assert code == 1
    assert err.startswith("pos-loyalty: ledger error: ")
    assert str(path) in err and "is damaged (database disk image is malformed)" in err
    assert files(path) == before


def test_the_api_answers_503_ledger_damaged_and_writes_nothing(tmp_path: Path) -> None:
    path, card, _ = build(tmp_path)
    damage(path, "events")
    service: Service = open_service(tmp_path)
    try:
        client = TestClient(create_app(service), raise_server_exceptions=False)
        before = files(path)
        body = {
            "receipt_id": "R-api",
            "card": card,
            "lines": [{"sku": "latte", "category": "coffee", "qty": 1, "unit_price": 450}],
        }
        for method, url, json in (
            ("POST", "/v1/baskets/commit", body),
            ("POST", "/v1/customers", {"name": "Dan"}),
        ):
            r = client.request(method, url, json=json)
            assert r.status_code == 503, (url, r.text)
            assert r.json()["error"]["code"] == "ledger_damaged"
            assert "damaged" in r.json()["error"]["message"]
        # health reads no event: it still answers (the POS sees the till, then the 503s)
        assert client.get("/v1/health").status_code == 200
        assert files(path) == before
    finally:
        service.ledger.close()


def test_damage_is_told_from_other_database_errors(tmp_path: Path) -> None:
    corrupt = sqlite3.DatabaseError("database disk image is malformed")
    corrupt.sqlite_errorname = "SQLITE_CORRUPT"
    assert damage_reason(corrupt) == "database disk image is malformed"
    locked = sqlite3.OperationalError("database is locked")
    locked.sqlite_errorname = "SQLITE_BUSY"
    assert damage_reason(locked) is None
    # a constraint is a bug or a race, not a damaged file: it is not reported as damage
    conn = sqlite3.connect(tmp_path / "x.sqlite")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError) as info:
        conn.execute("INSERT INTO t VALUES (1)")
    assert damage_reason(info.value) is None
    conn.close()


def test_the_cashier_sees_a_plain_sentence() -> None:
    damaged = plain_error(LedgerDamaged("/x/ledger.sqlite is damaged (...)"))
    assert "damaged" in damaged and "nothing was changed" in damaged
    assert "sqlite" not in damaged.lower() and "/x/" not in damaged
    assert "cannot be used" in plain_error(LedgerError("locked"))


# -- the background file check (agent, terminal) ------------------------------------------


def test_the_file_check_stops_a_till_on_damage_its_reads_have_not_met(tmp_path: Path) -> None:
    """The receipts table is damaged: a card look-up never reads it and answers as if all
    were well. Once the check has run, every call is refused by name and the file stays as
    it was."""
    path, card, customer = build(tmp_path)
    damage(path, "receipts")
    before = files(path)
    service: Service = open_service(tmp_path)
    try:
        assert service.ledger.file_check.state == "not_started"
        assert service.lookup(card)["customer"]["id"] == customer  # the damage goes unseen

        service.ledger.start_file_check().join(timeout=60)
        check = service.ledger.file_check
        assert check.state == "damaged", check
        assert check.problem and check.finished_at
        for call in (
            lambda: service.lookup(card),
            lambda: service.health(),
            lambda: service.ledger.receipt("R-1"),
            lambda: service.enrol(Profile(name="Cleo")),
        ):
            with pytest.raises(LedgerDamaged) as refused:
                call()
            assert str(path) in str(refused.value) and check.problem in str(refused.value)
        client = TestClient(create_app(service), raise_server_exceptions=False)
        r = client.get(f"/v1/cards/{card}")
        assert r.status_code == 503 and r.json()["error"]["code"] == "ledger_damaged"
        # The event stream answers the same before it starts (its hello reads the ledger).
        r = client.get("/v1/events")
        assert r.status_code == 503 and r.json()["error"]["code"] == "ledger_damaged"
        # Health is refused too, but a monitor still learns why, and the rest it can tell.
        r = client.get("/v1/health")
        assert r.status_code == 503 and r.json()["error"]["code"] == "ledger_damaged"
        told = r.json()["error"]["health"]
        assert told["ledger_check"] == check.as_dict()
        assert told["terminal_id"] == service.settings.terminal_id
        assert "events_waiting" not in told  # not known without the ledger
        assert files(path) == before
    finally:
        service.ledger.close()


def test_the_file_check_passes_a_sound_file_and_sales_go_on_meanwhile(tmp_path: Path) -> None:
    path, card, _ = build(tmp_path)
    service: Service = open_service(tmp_path)
    try:
        thread = service.ledger.start_file_check()
        assert service.ledger.file_check.state in ("running", "ok")
        sale(service, "R-during", card, T0 + timedelta(days=3), ("latte", "coffee", 1, 450))
        thread.join(timeout=60)
        assert service.ledger.file_check.state == "ok"
        assert service.health()["ledger_check"]["state"] == "ok"
        assert service.lookup(card)["customer"]["name"] == "Ada"
    finally:
        service.ledger.close()


def test_the_agent_checks_its_ledger_and_stops_loyalty_on_damage(tmp_path: Path) -> None:
    from ..test_agent_process import start_agent

    path, card, _ = build(tmp_path)
    damage(path, "receipts")
    proc, base = start_agent(tmp_path)
    try:
        deadline = time.monotonic() + 60
        while True:  # the check's verdict
            health = httpx.get(f"{base}/v1/health", timeout=5)
            if health.status_code == 503:
                break
            assert health.json()["ledger_check"]["state"] in ("running", "ok")
            assert time.monotonic() < deadline, "the agent never reported the damage"
            time.sleep(0.1)
        assert health.json()["error"]["code"] == "ledger_damaged"
        r = httpx.get(f"{base}/v1/cards/{card}")
        assert r.status_code == 503 and r.json()["error"]["code"] == "ledger_damaged"
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert out.count("is damaged") >= 1 and "loyalty stops on this till" in out


def test_a_repeating_file_check_finds_damage_that_comes_later(tmp_path: Path) -> None:
    """A till runs for months: the check runs again (daily in the commands; here every 50
    ms) and finds a page damaged after the first check, then stops."""
    path, card, _ = build(tmp_path)
    service: Service = open_service(tmp_path)
    try:
        thread = service.ledger.start_file_check(every=0.05)
        deadline = time.monotonic() + 30
        while service.ledger.file_check.state != "ok":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert service.lookup(card)["customer"]["name"] == "Ada"
        damage(path, "receipts")
        thread.join(timeout=60)  # ends once damage is found
        assert not thread.is_alive()
        assert service.ledger.file_check.state == "damaged"
        with pytest.raises(LedgerDamaged):
            service.lookup(card)
    finally:
        service.ledger.close()


def test_closing_the_ledger_ends_a_repeating_file_check(tmp_path: Path) -> None:
    build(tmp_path)
    service: Service = open_service(tmp_path)
    thread = service.ledger.start_file_check(every=3600)
    deadline = time.monotonic() + 30
    while service.ledger.file_check.state != "ok":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    service.ledger.close()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_a_damaged_ledger_does_not_stop_the_till_from_starting(tmp_path: Path) -> None:
    """The agent and terminal start their sync first: with the ledger refused, that says why
    instead of raising (the till starts, and every call answers that the ledger is damaged)."""
    from pos_loyalty.bootstrap import start_embedded_sync

    path, _, _ = build(tmp_path)
    damage(path, "receipts")
    service: Service = open_service(tmp_path)
    try:
        service.ledger.start_file_check().join(timeout=60)
        assert service.ledger.file_check.state == "damaged"
        embedded = start_embedded_sync(service)
        assert embedded.note.startswith("sync not started: ") and "damaged" in embedded.note
        assert embedded.status()["online"] is False
        embedded.stop()
    finally:
        service.ledger.close()
