"""``pos-loyalty server verify``: check every till chain the server holds, as the tills would.

A till refuses a pulled page whose event does not match its hash or does not link to the
same till's slot before it (``pos_loyalty.ledger.replication``), and stops pulling until the
server serves it right. This finds such events on the server first, for the operator: every
accepted event's content is checked against its hash (``WireEvent.checked_payload``, the
ingest's own check), every slot (accepted events, and the ``chain`` rows: superseded,
local-only and quarantined slots) must follow a slot held at the same till's ``seq - 1`` (a
restored till's forked chain has several at one seq: any of them will do) or, at seq 1,
nothing; a missing seq is a gap.

Streams: both tables are read in (terminal, seq) order in one read snapshot, without a write
lock (SQLite: a deferred transaction; PostgreSQL: REPEATABLE READ through a server-side
cursor), holding only one seq's hashes per till, so it runs beside ingest at any size.
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Generator
from dataclasses import dataclass, field, replace
from typing import Any

from pos_loyalty.ledger.codec import GENESIS
from pos_loyalty.ledger.replication import StoredEvent
from sync.protocol import WireEvent

from .store import ServerStore

MAX_PROBLEMS = 100  # listed; the count goes on


@dataclass(frozen=True)
class ChainProblem:
    merchant_id: str
    terminal_id: str
    epoch: int
    seq: int
    event_id: str
    what: str

    def line(self) -> str:
        return (
            f"{self.merchant_id}/{self.terminal_id} seq {self.seq} (epoch {self.epoch}) "
            f"event {self.event_id}: {self.what}"
        )


@dataclass
class ChainReport:
    events: int = 0  # accepted events whose content was checked
    slots: int = 0  # every slot whose link was checked
    terminals: int = 0
    problems: list[ChainProblem] = field(default_factory=list)
    more_problems: int = 0  # found beyond MAX_PROBLEMS

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: ChainProblem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)
        else:
            self.more_problems += 1


# Both in the order Python compares them in (``heapq.merge``): terminal ids by code point,
# which is SQLite's BINARY and PostgreSQL's "C" collation (a database's own collation may
# sort "Till-B" before "till-a", or ignore case and punctuation).
_EVENTS = (
    "SELECT terminal_id, seq, epoch, merchant_id, id, prev_hash, hash, kind, at, customer_id,"
    " key, payload FROM events{where} ORDER BY terminal_id{collate}, seq, epoch"
)
_CHAIN = (
    "SELECT terminal_id, seq, epoch, merchant_id, event_id, prev_hash, hash, status"
    " FROM chain{where} ORDER BY terminal_id{collate}, seq, epoch"
)


def verify_chains(store: ServerStore, merchant_id: str | None = None) -> ChainReport:
    """Check the chains of every till (of ``merchant_id``, when given)."""
    report = ChainReport()
    where, params = "", ()  # type: tuple[str, tuple[str, ...]]
    if merchant_id is not None:
        where, params = " WHERE merchant_id = {p}", (merchant_id,)
    collate = "" if store.is_sqlite else ' COLLATE "C"'
    with _snapshot(store) as read, contextlib.ExitStack() as cursors:
        event_rows = read(_EVENTS.format(where=where, collate=collate), params)
        chain_rows = read(_CHAIN.format(where=where, collate=collate), params)
        # Closed here, before the snapshot ends (an exception would otherwise leave them to
        # the garbage collector, after the connection is back in the pool).
        cursors.callback(event_rows.close)
        cursors.callback(chain_rows.close)
        events = ((*r[:7], r) for r in event_rows)
        chain = ((*r[:7], None) for r in chain_rows)
        walk = _Walk(report)
        for t, s, epoch, merchant, event_id, prev_hash, digest, row in heapq.merge(
            events, chain, key=lambda slot: (slot[0], slot[1], slot[2])
        ):
            slot = ChainProblem(merchant, t, epoch, s, event_id, "")
            walk.link(slot, bytes(prev_hash), bytes(digest))
            if row is not None:  # an accepted event: its content too
                report.events += 1
                event = StoredEvent(
                    event_id, t, s, row[7], row[8], row[9], row[10], row[11],
                    bytes(prev_hash), bytes(digest),
                )  # fmt: skip
                if WireEvent.from_row(event).checked_payload() is None:
                    walk.fail(slot, "its content does not match its hash (or does not decode)")
    return report


class _Walk:
    """The link check along one till's slots in seq order: the hashes held at the current
    seq and at the one before (several at a seq where a restored till forked its chain)."""

    def __init__(self, report: ChainReport) -> None:
        self.report = report
        self.terminal: str | None = None
        self.seq = 0
        self.here: set[bytes] = set()
        self.before: set[bytes] | None = set()  # None after a gap: nothing to link to

    def fail(self, slot: ChainProblem, what: str) -> None:
        self.report.add(replace(slot, what=what))

    def link(self, slot: ChainProblem, prev_hash: bytes, digest: bytes) -> None:
        s = slot.seq
        if slot.terminal_id != self.terminal:
            self.terminal, self.seq, self.here, self.before = slot.terminal_id, 0, set(), set()
            self.report.terminals += 1
        if s != self.seq:
            if s not in (self.seq + 1, 1):
                self.fail(slot, f"seq gap: no slot holds seq {self.seq + 1}..{s - 1}")
            self.before = self.here if s == self.seq + 1 else None
            self.here, self.seq = set(), s
        self.report.slots += 1
        if s == 1:
            if prev_hash != GENESIS:
                self.fail(slot, "a first event that follows another")
        elif self.before is not None and prev_hash not in self.before:
            self.fail(slot, f"does not chain to any slot held at seq {s - 1}")
        self.here.add(digest)


class _Reader:
    def __init__(self, store: ServerStore, raw: Any) -> None:
        self.store = store
        self.raw = raw
        self.count = 0

    def __call__(self, sql: str, params: tuple[Any, ...]) -> Generator[tuple[Any, ...]]:
        if self.store.is_sqlite:
            cursor = self.raw.execute(sql.format(p="?"), params)
        else:
            self.count += 1
            cursor = self.raw.cursor(name=f"verify_{self.count}")  # server-side: streamed
            cursor.itersize = 5000
            cursor.execute(sql.format(p="%s"), params)
        try:
            yield from cursor
        finally:
            cursor.close()


class _snapshot:  # noqa: N801 - used as a context manager like contextlib's
    """One read snapshot on the driver's connection, never the write lock: SQLAlchemy's
    transactions on the server's SQLite are ``BEGIN IMMEDIATE`` (``make_server_engine``)."""

    def __init__(self, store: ServerStore) -> None:
        self.store = store

    def __enter__(self) -> _Reader:
        self.pooled = self.store.engine.raw_connection()
        raw: Any = self.pooled.driver_connection
        try:
            if self.store.is_sqlite:
                raw.execute("BEGIN")  # deferred: a read snapshot once the first SELECT runs
            else:
                import psycopg

                raw.rollback()
                self.level = raw.isolation_level
                raw.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        except BaseException:
            self.pooled.close()
            raise
        self.raw = raw
        return _Reader(self.store, raw)

    def __exit__(self, *_: object) -> None:
        try:
            if self.store.is_sqlite:
                self.raw.execute("ROLLBACK")
            else:
                self.raw.rollback()
                self.raw.isolation_level = self.level
        finally:
            self.pooled.close()
