"""The server's Alembic migrations go down and up again on SQLite and PostgreSQL, keeping
what the older revision holds (here: s0004, the tills' reported status)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect

from sync.server.store import MIGRATIONS, ServerStore


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
