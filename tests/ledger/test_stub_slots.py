"""Chain stubs of other tills, several to a slot (revision 0007_stub_slots).

Till A is restored from a backup and forks its chain: the server holds two slots for A's
seq 2, the first epoch's event and the restored till's quarantined one. Till B pulls with
``scope=region``: A's first seq 2 concerns a customer of another region, so B gets both seq
2 slots as stubs, in different pages. Both must be kept, or A's next event (seq 3, which
follows the quarantined slot) would link to nothing B holds: its pull would stop for good.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config

from pos_loyalty.ledger.replication import PulledEventRefused, Replica, StoredEvent, Stub
from pos_loyalty.ledger.store import MIGRATIONS, Ledger, make_engine
from pos_loyalty.ledger.verify import verify

from ..sync.test_store_contract import append, credit


def stub(e: StoredEvent, prev_hash: bytes | None = None) -> Stub:
    return Stub(e.terminal_id, e.seq, e.id, prev_hash or e.prev_hash, e.hash)


def forked_chain(tmp_path: Path) -> tuple[StoredEvent, StoredEvent, StoredEvent, StoredEvent]:
    """Till A's seq 1 and 2, then, restored to seq 1, its new seq 2 and 3."""
    first, second, again, third = fork_of_a(tmp_path, 2)
    return first, second, again, third


def fork_of_a(tmp_path: Path, new: int) -> list[StoredEvent]:
    """Till A's seq 1 and 2, then, restored to seq 1, its ``new`` events from seq 2 on."""
    path = tmp_path / "a.sqlite"
    a = Ledger(path, "A")
    (first,) = append(a, [credit("A", "c1", 1)])
    a.close()
    shutil.copy(path, tmp_path / "a-backup.sqlite")
    a = Ledger(path, "A")
    second = append(a, [credit("A", "c2", 10)])[-1]
    a.close()
    restored = Ledger(tmp_path / "a-backup.sqlite", "A")
    forked = append(restored, [credit("A", "c1", 100 + n) for n in range(new)])[-new:]
    restored.close()
    assert forked[0].seq == second.seq == 2 and forked[0].hash != second.hash
    return [first, second, *forked]


def stub_rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT terminal_id, seq, hash FROM chain_stubs ORDER BY rowid"
        ).fetchall()


def test_two_stubs_for_one_slot_are_both_kept_and_the_fork_verifies(tmp_path: Path) -> None:
    first, second, again, third = forked_chain(tmp_path)
    b = Ledger(tmp_path / "b.sqlite", "B")
    try:
        replica = Replica(b)
        replica.apply_pulled([first], [stub(second)], "m1:2")
        replica.apply_pulled([], [stub(again)], "m1:3")
        applied = replica.apply_pulled([third], [], "m1:4")
        assert applied.applied == 1
        assert [(t, s) for t, s, _ in stub_rows(b.path)] == [("A", 2), ("A", 2)]
        report = verify(b)
        assert report.ok, report.problems
    finally:
        b.close()


def test_a_stub_that_links_to_nothing_held_is_refused(tmp_path: Path) -> None:
    first, second, _, _ = forked_chain(tmp_path)
    b = Ledger(tmp_path / "b.sqlite", "B")
    try:
        replica = Replica(b)
        with pytest.raises(PulledEventRefused, match="stub for event .* does not chain"):
            replica.apply_pulled([first], [stub(second, prev_hash=bytes([7]) * 32)], "m1:2")
        assert stub_rows(b.path) == [] and replica.state().cursor is None
    finally:
        b.close()


def test_verify_refuses_a_fork_through_a_stub_that_hangs_on_nothing(tmp_path: Path) -> None:
    """The stub the restored till's seq 3 follows is edited to follow nothing held here."""
    first, second, again, third = forked_chain(tmp_path)
    b = Ledger(tmp_path / "b.sqlite", "B")
    try:
        replica = Replica(b)
        replica.apply_pulled([first, second], [stub(again)], "m1:3")
        replica.apply_pulled([third], [], "m1:4")
        assert verify(b).ok
        with sqlite3.connect(b.path) as conn:
            conn.execute("UPDATE chain_stubs SET prev_hash = ?", (bytes([9]) * 32,))
        report = verify(b)
        assert not report.ok
        assert report.problems[0].what == "does not chain to the previous event"
        assert report.problems[0].seq == 3
    finally:
        b.close()


def test_downgrade_keeps_one_stub_per_slot_and_upgrade_keeps_them(tmp_path: Path) -> None:
    first, second, again, third = forked_chain(tmp_path)
    b = Ledger(tmp_path / "b.sqlite", "B")
    Replica(b).apply_pulled([first], [stub(second), stub(again)], "m1:3")
    b.close()
    assert len(stub_rows(b.path)) == 2
    engine = make_engine(b.path)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0006_events")
        assert stub_rows(b.path) == [("A", 2, second.hash)]  # the one stored first
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    finally:
        engine.dispose()
    assert stub_rows(b.path) == [("A", 2, second.hash)]


def test_verify_walks_back_through_the_fork_a_region_till_holds_as_stubs(tmp_path: Path) -> None:
    """A region-only till holds A's seq 1, stubs of both epochs at seq 2, the restored
    epoch's stub at seq 3 and A's seq 4: verify must take the stubs that lead to seq 4, not
    the first that fits at seq 2."""
    first, second, again, third, fourth = fork_of_a(tmp_path, 3)
    b = Ledger(tmp_path / "b.sqlite", "B")
    try:
        replica = Replica(b)
        replica.apply_pulled([first], [stub(second)], "m1:2")
        replica.apply_pulled([], [stub(again), stub(third)], "m1:4")
        assert replica.apply_pulled([fourth], [], "m1:5").applied == 1
        report = verify(b)
        assert report.ok, report.problems
    finally:
        b.close()
