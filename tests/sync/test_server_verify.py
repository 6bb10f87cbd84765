"""``pos-loyalty server verify``: the server's chains checked as the tills would check them,
on SQLite and PostgreSQL, beside ingest."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from pos_loyalty.cli import main
from pos_loyalty.ledger.codec import chain_hash, event_from_row
from sync.server.store import ServerStore
from sync.server.verify import verify_chains

from .conftest import LiveServer, Till
from .test_pull_checks import EVENTS, _changed_on_server, _newest_sale, _two_tills
from .test_store_contract import append, credit, push, restored_till


def test_sound_chains_verify_and_each_kind_of_damage_is_named(
    store: ServerStore, live_server: LiveServer, make_till: Callable[..., Till]
) -> None:
    a, b, _ = _two_tills(store, live_server, make_till)
    report = verify_chains(store)
    assert report.ok, report.problems
    assert report.terminals == 1 and report.events == report.slots >= 3

    with store.engine.connect() as conn:
        sale_id, payload, _, _ = _newest_sale(conn, a.terminal_id)
        first = conn.execute(
            select(EVENTS).where(EVENTS.c.terminal_id == a.terminal_id, EVENTS.c.seq == 1)
        ).one()
    with _changed_on_server(store, sale_id, payload=payload.replace('"delta":', '"delta":9')):
        report = verify_chains(store)
        assert [(p.event_id, p.what) for p in report.problems] == [
            (sale_id, "its content does not match its hash (or does not decode)")
        ]
    other = bytes([0x44]) * 32
    rehashed = chain_hash(other, event_from_row(first))
    with _changed_on_server(store, first.id, prev_hash=other, hash=rehashed):
        problems = verify_chains(store).problems
        assert (first.id, "a first event that follows another") in [
            (p.event_id, p.what) for p in problems
        ]
        # The event after it no longer links either.
        assert [p.seq for p in problems if p.what.startswith("does not chain")] == [2]
    assert verify_chains(store, "m1").ok
    assert verify_chains(store, "another-merchant").terminals == 0


def test_a_restored_tills_fork_verifies_and_a_gap_is_named(
    store: ServerStore, tmp_path: Path
) -> None:
    restored, auth = restored_till(store, tmp_path)
    push(store, auth, append(restored, [credit("t1", "c1", 100), credit("t1", "c1", 1000)]))
    restored.close()
    report = verify_chains(store)
    assert report.ok, report.problems
    assert report.slots == 4 and report.events == 3  # seq 2 twice: one quarantined
    with store.engine.begin() as conn:
        conn.execute(EVENTS.delete().where(EVENTS.c.terminal_id == "t1", EVENTS.c.seq == 1))
    problems = verify_chains(store).problems
    assert [(p.seq, p.what) for p in problems] == [(2, "seq gap: no slot holds seq 1..1")]


def test_the_command_says_ok_or_lists_the_problems(
    store: ServerStore,
    live_server: LiveServer,
    make_till: Callable[..., Till],
    db_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a, _, _ = _two_tills(store, live_server, make_till)
    assert main(["server", "--db", db_url, "verify"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: ") and "1 till(s) checked (all merchants)" in out
    with store.engine.connect() as conn:
        sale_id = _newest_sale(conn, a.terminal_id)[0]
    with _changed_on_server(store, sale_id, payload="{not json"):
        assert main(["server", "--db", db_url, "verify", "--merchant", "m1"]) == 1
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].startswith(f"m1/{a.terminal_id} seq ") and sale_id in lines[0]
        assert lines[-1].startswith("1 problem(s): ")
        assert main(["--json", "server", "--db", db_url, "verify"]) == 1
        answer = json.loads(capsys.readouterr().out)
        assert answer["ok"] is False and answer["problems"][0]["event_id"] == sale_id
