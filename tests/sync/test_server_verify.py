"""``pos-loyalty server verify``: the server's chains checked as the tills would check them,
on SQLite and PostgreSQL, beside ingest."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from pos_loyalty.cli import main
from pos_loyalty.ledger.codec import chain_hash, event_from_row
from pos_loyalty.ledger.replication import Answer, Replica
from pos_loyalty.ledger.store import Ledger
from pos_loyalty.ledger.verify import verify
from sync.client import SyncFailed, _stored, _wire
from sync.protocol import PushRequest, Status, WireEvent
from sync.server.store import ServerStore
from sync.server.verify import verify_chains

from .conftest import LiveServer, Postgres, Till
from .helpers import nonzero, pair_till, sync_round, till_balances
from .test_pull_checks import EVENTS, _changed_on_server, _newest_sale, _two_tills
from .test_store_contract import (
    _stub,
    append,
    auth_for,
    credit,
    expiry,
    push,
    restored_till,
    till_ledger,
)


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


def test_a_damaged_server_copy_is_mended_by_its_tills_resend(
    store: ServerStore,
    live_server: LiveServer,
    make_till: Callable[..., Till],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`server verify` names the damaged event; `sync --once --resend-from SEQ` on the till
    that recorded it pushes it again, the server stores the till's copy in place of its own
    (same id and hash), records it for the operator, and the other tills' pulls go on."""
    from pos_loyalty.config import load_settings

    data = tmp_path / "cli-till"
    terminal = load_settings(None, data_dir=data).terminal_id
    base = ["--data-dir", str(data)]
    token = store.create_pairing_token(terminal, "m1", "s1")
    assert main([*base, "pair", "--server", live_server.url, "--token", token]) == 0
    assert main([*base, "--json", "enrol", "--name", "Eve"]) == 0
    card = json.loads(capsys.readouterr().out.splitlines()[-1])["card"]["code"]
    assert (
        main([*base, "sale", "--card", card, "--receipt", "R-1", "--line", "x:bakery:1:5000"]) == 0
    )
    assert main([*base, "sync", "--once"]) == 0
    b = make_till("till-b")
    pair_till(store, b, live_server.url)
    capsys.readouterr()

    with store.engine.connect() as conn:
        sale_id, payload, _, _ = _newest_sale(conn, terminal)
        seq = conn.execute(select(EVENTS.c.seq).where(EVENTS.c.id == sale_id)).scalar_one()
    with store.engine.begin() as conn:  # damaged on the server's disk, for good
        conn.execute(
            EVENTS.update()
            .where(EVENTS.c.id == sale_id)
            .values(payload=payload.replace('"delta":', '"delta":7'))
        )
    assert [p.event_id for p in verify_chains(store).problems] == [sale_id]
    with pytest.raises(SyncFailed):
        sync_round(b)

    assert main([*base, "sync", "--once", "--resend-from", "0"]) == 2
    assert main([*base, "sync", "--once", "--resend-from", str(seq)]) == 0
    assert verify_chains(store).ok
    repaired = [c for c in store.conflicts() if c["reason"] == "repaired"]
    assert [c["event_id"] for c in repaired] == [sale_id]
    sync_round(b)
    assert nonzero(till_balances(b)) == nonzero(store.balances("m1"))
    # Resending again changes nothing more.
    assert main([*base, "sync", "--once", "--resend-from", "1"]) == 0
    assert len([c for c in store.conflicts() if c["reason"] == "repaired"]) == 1


def test_the_loser_of_an_expiry_race_verifies_after_pulling_the_winner(
    store: ServerStore, tmp_path: Path
) -> None:
    """Both tills expired the same lot (one derived id). The loser holds its own copy, so
    it skips the winner's event when it pulls: that slot of the winner's chain is kept as a
    stub, and the winner's next event follows it without a gap."""
    a, b = till_ledger(tmp_path, "t1"), till_ledger(tmp_path, "t2")
    auth_a, auth_b = auth_for(store, "t1"), auth_for(store, "t2")
    try:
        earn = credit("t1", "c1", 100)
        push(store, auth_a, append(a, [earn]))
        loser = Replica(b)
        page = store.pull(auth_b, None, 100)
        loser.apply_pulled([_stored(p.event) for p in page.events], [], page.cursor)
        lot = f"{earn.id}/points"
        push(store, auth_a, append(a, [expiry("t1", lot, 100)])[-1:])
        sent = append(b, [expiry("t2", lot, 70)])
        answer = store.ingest(
            auth_b,
            PushRequest(terminal_id="t2", events=[WireEvent.model_validate(_wire(sent[-1]))]),
        )
        r = answer.results[0]
        loser.record_answers(
            sent[-1:],
            [Answer(r.id, r.seq, r.status.value, r.reason, None, r.winner_payload)],
            answer.head.epoch,
        )
        push(store, auth_b, loser.unsynced(10))
        push(store, auth_a, append(a, [credit("t1", "c1", 5)])[-1:])
        page = store.pull(auth_b, loser.state().cursor, 100)
        loser.apply_pulled(
            [_stored(p.event) for p in page.events],
            [_stub(s) for s in page.stubs],
            page.cursor,
        )
        report = verify(b)
        assert report.ok, report.problems
        assert verify_chains(store).ok
    finally:
        a.close()
        b.close()


def test_a_resend_mends_a_damaged_link_and_leaves_a_sound_copy_alone(
    store: ServerStore, tmp_path: Path
) -> None:
    till = till_ledger(tmp_path, "t1")
    auth = auth_for(store, "t1")
    try:
        sent = append(till, [credit("t1", "c1", 1), credit("t1", "c1", 2)])
        push(store, auth, sent)
        # Written differently but the same event (the hash covers its canonical form): the
        # stored copy is sound, so nothing is replaced or recorded.
        spaced = {**_wire(sent[1]), "payload": json.dumps(json.loads(sent[1].payload), indent=1)}
        answer = store.ingest(
            auth, PushRequest(terminal_id="t1", events=[WireEvent.model_validate(spaced)])
        )
        assert [r.status.value for r in answer.results] == ["duplicate"]
        with store.engine.connect() as conn:
            kept = conn.execute(select(EVENTS.c.payload).where(EVENTS.c.id == sent[1].id))
            assert kept.scalar_one() == sent[1].payload
        assert not [c for c in store.conflicts() if c["reason"] == "repaired"]
        # A damaged link: mended by the resend like a damaged payload.
        with store.engine.begin() as conn:
            conn.execute(
                EVENTS.update().where(EVENTS.c.id == sent[1].id).values(prev_hash=bytes(32))
            )
        assert {p.seq for p in verify_chains(store).problems} == {2}  # link and hash
        assert push(store, auth, sent[1:]) == [Status.DUPLICATE]
        assert verify_chains(store).ok
        assert [c["event_id"] for c in store.conflicts() if c["reason"] == "repaired"] == [
            sent[1].id
        ]
    finally:
        till.close()


def test_chains_verify_whatever_the_databases_collation(postgres: Postgres, tmp_path: Path) -> None:
    """A PostgreSQL database whose collation sorts terminal ids unlike Python (ICU, ignoring
    case): the event and chain-slot streams must still merge in one order."""
    import psycopg

    name = f"icu_{os.getpid()}"
    with psycopg.connect(
        f"host=127.0.0.1 port={postgres.port} user=postgres dbname=postgres", autocommit=True
    ) as conn:
        conn.execute(
            f'CREATE DATABASE "{name}" TEMPLATE template0 LOCALE_PROVIDER icu'
            " ICU_LOCALE 'en' LOCALE 'C.UTF-8'"
        )
    store = ServerStore(postgres.url(name))
    try:
        # till-a forks its chain (a quarantined slot: a `chain` row); Till-B sorts before it
        # in Python, after it in the database's collation.
        path = tmp_path / "a.sqlite"
        a = Ledger(path, "till-a")
        auth_a = auth_for(store, "till-a")
        push(store, auth_a, append(a, [credit("till-a", "c1", 1)]))
        a.close()
        shutil.copy(path, tmp_path / "a-backup.sqlite")
        a = Ledger(path, "till-a")
        push(store, auth_a, append(a, [credit("till-a", "c1", 2)]))
        a.close()
        restored = Ledger(tmp_path / "a-backup.sqlite", "till-a")
        # Its re-used seq 2 is quarantined: till-a's last slot is a `chain` row.
        push(store, auth_a, append(restored, [credit("till-a", "c1", 3)]))
        restored.close()
        b = Ledger(tmp_path / "b.sqlite", "Till-B")
        push(store, auth_for(store, "Till-B"), append(b, [credit("Till-B", "c2", 5)]))
        b.close()
        report = verify_chains(store)
        assert report.ok, report.problems
        assert report.terminals == 2
    finally:
        store.close()
