"""The server's Alembic migrations go down and up again on SQLite and PostgreSQL, keeping
what the older revision holds (s0004: the tills' reported status; s0005: the chain slots)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect

from pos_loyalty.domain.events import Posting, Unit
from sync.server.snapshots import heads_at
from sync.server.store import MIGRATIONS, ServerStore
from tests.sync.test_store_contract import append, auth_for, credit, push, till_ledger


def _alembic(store: ServerStore, action: str, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, revision)


def _columns(store: ServerStore) -> set[str]:
    return {c["name"] for c in inspect(store.engine).get_columns("terminals")}


STATUS = {"last_seen_at", "programs_version", "programs_refused", "programs_problem"}


def test_s0004_down_and_up_keeps_terminals(store: ServerStore) -> None:
    store.ensure_terminal("till-1", "m1", "s1")
    assert _columns(store) >= STATUS
    _alembic(store, "downgrade", "s0003")
    assert not STATUS & _columns(store)
    _alembic(store, "upgrade", "head")
    assert _columns(store) >= STATUS
    (row,) = store.terminals()
    assert (row["id"], row["status"], row["last_seen_at"], row["programs_version"]) == (
        "till-1",
        "active",
        None,
        None,
    )


def _slots(store: ServerStore) -> list[tuple[object, ...]]:
    """Every chain slot as (terminal, epoch, seq, position, event id, status), from the
    table layout of s0004 (all slots in ``chain``)."""
    with store.engine.connect() as conn:
        return sorted(
            tuple(r)
            for r in conn.exec_driver_sql(
                "SELECT terminal_id, epoch, seq, server_seq, event_id, status FROM chain"
            )
        )


def test_s0005_moves_accepted_slots_to_events_and_back(store: ServerStore, tmp_path: Path) -> None:
    """s0005 keeps only the slots that are not ``events`` rows in ``chain``; going down
    writes the accepted slots back exactly, going up again removes them; pull and the chain
    heads read the same either way."""
    a, b = till_ledger(tmp_path, "t1"), till_ledger(tmp_path, "t2")
    auth_a, auth_b, reader = auth_for(store, "t1"), auth_for(store, "t2"), auth_for(store, "t3")
    ev = credit("t1", "c1", 10)
    push(store, auth_a, append(a, [ev, credit("t1", "c2", 3)]))
    forged = append(
        b, [replace(ev, terminal_id="t2", postings=(Posting("points", Unit.POINTS, 99),))]
    )
    push(store, auth_b, forged)  # a conflict slot: in ``chain`` only
    push(store, auth_b, append(b, [credit("t2", "c1", 4)]))
    a.close()
    b.close()

    def page() -> tuple[list[tuple[int, str]], list[tuple[str, int, str]]]:
        p = store.pull(reader, None, 100)
        return (
            [(e.server_seq, e.event.id) for e in p.events],
            [(s.terminal_id, s.seq, s.hash) for s in p.stubs],
        )

    def heads() -> list[list[object]]:
        with store.engine.connect() as conn:
            return heads_at(conn, "m1", 10)

    def fillfactor() -> object:
        if store.is_sqlite:
            return "n/a"
        with store.engine.connect() as conn:
            return conn.exec_driver_sql(
                "SELECT reloptions FROM pg_class WHERE relname = 'balances'"
            ).scalar()

    pulled, chain_heads = page(), heads()
    assert fillfactor() in ("n/a", ["fillfactor=50"])
    assert [p[0] for p in pulled[0]] == [1, 2, 4] and len(pulled[1]) == 1
    assert [h[:3] for h in chain_heads] == [["t1", 1, 2], ["t2", 1, 2]]
    assert [s[5] for s in _slots(store)] == ["conflict"]

    _alembic(store, "downgrade", "s0004")
    with store.engine.connect() as conn:
        stored = sorted(
            tuple(r)
            for r in conn.exec_driver_sql(
                "SELECT terminal_id, epoch, seq, server_seq, id, 'accepted' FROM events"
            )
        )
    assert _slots(store) == sorted([*stored, ("t2", 1, 1, 3, ev.id, "conflict")])
    assert fillfactor() in ("n/a", None)
    _alembic(store, "upgrade", "head")
    assert fillfactor() in ("n/a", ["fillfactor=50"])
    assert [s[5] for s in _slots(store)] == ["conflict"]
    assert page() == pulled and heads() == chain_heads
    assert store.count("events") == 3
