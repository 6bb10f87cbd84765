"""``ledger verify``: check every till's chain and sequence, rebuild the projections, compare.

Checks run as a list (in the spirit of beancount's ``ops/validation``); the first problem
found names the event: its id, till and sequence number.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, select

from pos_loyalty.domain.events import Event

from . import schema
from .codec import GENESIS, chain_hash, event_from_row
from .projections import COMPARED, compared_rows, rebuild_into
from .snapshot import (
    COMPLETE,
    baseline,
    baseline_heads,
    load_baseline_into,
    stored_digest,
    stored_header,
    stored_pages,
)
from .store import Ledger, LedgerDamaged, LedgerError, integrity_problems


@dataclass
class Problem:
    what: str
    event_id: str | None = None
    terminal_id: str | None = None
    seq: int | None = None

    def __str__(self) -> str:
        where = (
            f"event {self.event_id} (till {self.terminal_id}, seq {self.seq}): "
            if self.event_id
            else ""
        )
        return where + self.what


@dataclass
class Report:
    events: int = 0
    terminals: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# Folded customer states held in memory at once while rebuilding; beyond this the least
# recently used ones go to the scratch file and are read back when needed.
MAX_STATES = 20_000


def verify(ledger: Ledger, *, scratch_dir: Path | None = None) -> Report:
    """Check the chains and sequences and compare the projections with a rebuild.

    Streams: the events are read and folded one at a time, the rebuild goes to a scratch
    SQLite file (in ``scratch_dir``, by default next to the ledger) and the tables are
    compared row by row in key order, so memory stays bounded at any ledger size. Everything
    is read in one read transaction: a till writing meanwhile does not disturb it."""
    report = Report()
    folder = scratch_dir if scratch_dir is not None else ledger.path.parent
    with ledger.reader() as tx, tempfile.TemporaryDirectory(prefix=".verify-", dir=folder) as tmp:
        conn = tx.conn
        # The file itself first: a damaged page can hide rows from every check below (a
        # damaged index answers look-ups wrongly while a scan of its table looks fine).
        damage = integrity_problems(tx.raw)
        if damage:
            report.problems.append(
                Problem("the file is damaged; SQLite's integrity check says: " + "; ".join(damage))
            )
            return report
        # A bootstrapped till (``ledger.snapshot``) starts from a baseline: every till's chain
        # continues from its head at the snapshot, and the projections are rebuilt from the
        # baseline plus the events after it. The baseline must be complete and unedited.
        base = baseline(conn)
        if base is not None and base.status != COMPLETE:
            report.problems.append(
                Problem(
                    f"the bootstrap from snapshot {base.cursor} is incomplete ({base.customers} "
                    f"of {base.total} customers loaded): run `pos-loyalty sync --bootstrap`"
                )
            )
            return report
        if base is not None and stored_digest(conn) != base.digest:
            report.problems.append(
                Problem(
                    f"the baseline (snapshot {base.cursor}) does not match the digest the "
                    "server gave for it: it was edited"
                )
            )
            return report
        chain = _ChainCheck(conn, ledger.terminal_id, report)
        scratch = _scratch_engine(Path(tmp) / "rebuilt.sqlite")
        try:
            with scratch.begin() as sconn:
                if base is not None:
                    load_baseline_into(sconn, stored_header(conn), list(stored_pages(conn)))
                rows = conn.execute(
                    select(schema.events).order_by(schema.events.c.pos),
                    execution_options={"yield_per": 2000},
                )
                rebuild_into(
                    sconn,
                    chain.events(rows, tx.dicts),
                    on_baseline=base is not None,
                    max_states=MAX_STATES,
                )
                if report.problems or not chain.heads_match():
                    return report
                report.problems.extend(_compare(conn, sconn))
        finally:
            scratch.dispose()
    return report


class _ChainCheck:
    """Checks each till's chain and sequence while the events stream past (into the
    rebuild); records the first problem in the report and stops the stream there."""

    def __init__(self, conn: Connection, own_terminal: str, report: Report) -> None:
        self.conn = conn
        self.report = report
        self.heads = baseline_heads(conn)
        self.last: dict[str, tuple[int, bytes, str]] = {
            tid: (seq, digest, "") for tid, (seq, digest) in self.heads.items()
        }
        # Slots of other tills' chains whose events the server does not serve (sync): the
        # links are checked through them, the events are not held here.
        # Never for this till's own chain: every one of its events must be here, or a
        # deleted event could hide behind a forged stub.
        # Several may share a slot: a restored till's forked chain (0007_stub_slots).
        self.stubs: dict[tuple[str, int], list[tuple[bytes, bytes, str]]] = defaultdict(list)
        for s in conn.execute(select(schema.chain_stubs)):
            if s.terminal_id != own_terminal:
                self.stubs[(s.terminal_id, s.seq)].append(
                    (bytes(s.prev_hash), bytes(s.hash), s.event_id)
                )

    def fail(self, what: str, row: Any) -> None:
        self.report.problems.append(Problem(what, row.id, row.terminal_id, row.seq))

    def events(self, rows: Iterable[Any], dicts: Any) -> Iterator[Event]:
        last = self.last
        for row in rows:
            try:
                ev = event_from_row(row, dicts, strict=True)
            except (ValueError, KeyError, TypeError) as exc:
                return self.fail(f"cannot be decoded ({exc})", row)
            t = row.terminal_id
            seq, prev, prev_id = last.get(t, (0, GENESIS, ""))
            if row.seq > seq + 1 and row.prev_hash is not None:
                # Slots of another till not held here (events the server does not serve
                # this till): stubs must lead back from this row's link to what is held,
                # through the right one where a restored till forked its chain.
                link, at, via = bytes(row.prev_hash), row.seq - 1, ""
                while at > seq and (stub := self._stub(t, at, digest=link)) is not None:
                    link, at, via = stub[0], at - 1, via or stub[2]
                if at == seq and (link == prev or self._fork(t, seq, link)):
                    seq, prev, prev_id = row.seq - 1, bytes(row.prev_hash), via
            if row.seq != seq + 1:
                gap = f"after seq {seq}" + (f" (event {prev_id})" if prev_id else "")
                return self.fail(f"sequence gap: expected seq {seq + 1} {gap}", row)
            # NULL: the hash of the row before, i.e. ``prev`` (0006_events)
            if row.prev_hash is not None and bytes(row.prev_hash) != prev:
                # Another till restored from a backup forked its chain (a new epoch): its
                # new events follow the slot the server quarantined, held here as a stub
                # beside the event of the first epoch at the same seq.
                if not self._fork(t, seq, bytes(row.prev_hash)):
                    return self.fail("does not chain to the previous event", row)
                prev = bytes(row.prev_hash)
            if chain_hash(prev, ev) != bytes(row.hash):
                if row.prev_hash is None:  # implied link: either this row or the one before
                    return self.fail(
                        "does not chain to the previous event, or its content was edited "
                        "(hash mismatch)",
                        row,
                    )
                return self.fail("content does not match its hash (edited)", row)
            last[row.terminal_id] = (row.seq, bytes(row.hash), row.id)
            self.report.events += 1
            yield ev
        self.report.terminals = len(last)

    def _stub(
        self, terminal_id: str, seq: int, *, prev: bytes | None = None, digest: bytes | None = None
    ) -> tuple[bytes, bytes, str] | None:
        """The stub at (``terminal_id``, ``seq``) that follows ``prev`` or has hash
        ``digest``."""
        for stub in self.stubs.get((terminal_id, seq), ()):
            if (prev is None or stub[0] == prev) and (digest is None or stub[1] == digest):
                return stub
        return None

    def _fork(self, terminal_id: str, seq: int, digest: bytes) -> bool:
        """Whether a stub at (``terminal_id``, ``seq``) has hash ``digest`` and itself
        follows a slot held at ``seq - 1`` (a fork's stub hangs on the chain)."""
        stub = self._stub(terminal_id, seq, digest=digest)
        return stub is not None and self._follows(terminal_id, seq, stub[0])

    def _follows(self, terminal_id: str, seq: int, prev_hash: bytes) -> bool:
        """Whether a slot at ``seq`` with ``prev_hash`` follows one held at ``seq - 1``
        (an event, a stub, the baseline's head; the genesis for seq 1). Nothing held there
        (before a bootstrap baseline, or not served to this till) is no evidence either way:
        the same rule as the pull's (``replication._link_problem``)."""
        if seq == 1:
            return prev_hash == GENESIS
        held = {stub[1] for stub in self.stubs.get((terminal_id, seq - 1), ())}
        head = self.heads.get(terminal_id)
        if head is not None and head[0] == seq - 1:
            held.add(head[1])
        held.update(
            bytes(row.hash)
            for row in self.conn.execute(
                select(schema.events.c.hash).where(
                    schema.events.c.terminal_id == terminal_id, schema.events.c.seq == seq - 1
                )
            )
        )
        return not held or prev_hash in held

    def heads_match(self) -> bool:
        for head in self.conn.execute(select(schema.heads)):
            seq, digest, event_id = self.last.get(head.terminal_id, (0, GENESIS, ""))
            if head.seq != seq or bytes(head.hash) != digest:
                self.report.problems.append(
                    Problem(
                        f"till {head.terminal_id}'s head is seq {head.seq} but its chain ends at "
                        f"seq {seq}: event seq {seq + 1}..{head.seq} missing (deleted?)",
                        event_id or None,
                        head.terminal_id,
                        seq,
                    )
                )
                return False
        return True


def _scratch_engine(path: Path) -> Engine:
    """A throw-away SQLite file for the rebuild: no journal, no fsync (it is deleted)."""
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA journal_mode=OFF")
        dbapi_conn.execute("PRAGMA synchronous=OFF")
        dbapi_conn.execute("PRAGMA cache_size=-65536")  # 64 MiB

    schema.metadata.create_all(engine)
    return engine


def _compare(stored: Connection, rebuilt: Connection) -> list[Problem]:
    """Row-by-row comparison of every projection (``projections.COMPARED``), both sides
    streamed in the same SQL order and merged, a few differing rows named per table."""
    problems = []
    for table in COMPARED:
        extra, missing = _merge_differences(
            compared_rows(stored, table), compared_rows(rebuilt, table)
        )
        if extra or missing:
            problems.append(
                Problem(
                    f"projection {table!r} differs from a rebuild from the events: "
                    f"stored but not rebuilt {extra}, rebuilt but not stored {missing}"
                )
            )
    return problems


def _sql_order(row: tuple[Any, ...]) -> tuple[tuple[int, Any], ...]:
    """SQLite's ORDER BY order in Python: NULL < numbers < text < blobs (BINARY collation,
    which orders UTF-8 like Python orders code points)."""
    return tuple(
        (0, 0)
        if v is None
        else (1, v)
        if isinstance(v, int | float)
        else (2, v)
        if isinstance(v, str)
        else (3, bytes(v))
        for v in row
    )


def _merge_differences(
    a: Iterator[tuple[Any, ...]], b: Iterator[tuple[Any, ...]], limit: int = 3
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Rows only in ``a`` and rows only in ``b`` (at most ``limit`` each), both sorted."""
    only_a: list[tuple[Any, ...]] = []
    only_b: list[tuple[Any, ...]] = []
    x, y = next(a, None), next(b, None)
    while (x is not None or y is not None) and (len(only_a) < limit or len(only_b) < limit):
        if y is None or (x is not None and _sql_order(x) < _sql_order(y)):
            if len(only_a) < limit:
                only_a.append(x)  # type: ignore[arg-type]
            x = next(a, None)
        elif x is None or _sql_order(y) < _sql_order(x):
            if len(only_b) < limit:
                only_b.append(y)
            y = next(b, None)
        else:
            x, y = next(a, None), next(b, None)
    return only_a, only_b


def rebuild(ledger: Ledger) -> None:
    """Replace the projections with a rebuild from the events (keeps cached responses); on
    a bootstrapped till from its baseline plus the events after it. Streams like
    ``verify``: the events are folded one at a time with a bounded number of states."""
    with ledger.transaction() as tx:
        conn = tx.conn
        damage = integrity_problems(tx.raw)
        if damage:  # rebuilding from damaged tables would write their damage into the new ones
            raise LedgerDamaged(
                f"{ledger.path} is damaged ({'; '.join(damage)}); nothing was rebuilt. Restore "
                "it from a backup (or bootstrap the till again from the sync server)"
            )
        base = baseline(conn)
        if base is not None and base.status != COMPLETE:
            raise LedgerError(
                "the bootstrap of this ledger is incomplete: finish it with "
                "`pos-loyalty sync --bootstrap` before rebuilding"
            )
        # The first answers given for each receipt are not derivable from the events: they
        # wait in a temporary table (on disk if large, not in Python memory).
        tx.raw.execute("DROP TABLE IF EXISTS temp.kept_responses")
        tx.raw.execute(
            "CREATE TEMP TABLE kept_responses AS SELECT key, response FROM main.receipts"
        )
        for table in (
            schema.customers,
            schema.cards,
            schema.balances,
            schema.lots,
            schema.receipts,
            schema.redemptions,  # 0005_compact
            schema.usage,  # the program catalog's projections (0002_catalog)
            schema.coupons,
            schema.referrals,
        ):
            conn.execute(table.delete())
        if base is not None:
            load_baseline_into(conn, stored_header(conn), list(stored_pages(conn)))
        rows = conn.execute(
            select(schema.events).order_by(schema.events.c.pos),
            execution_options={"yield_per": 2000},
        )
        rebuild_into(
            conn,
            (event_from_row(r, tx.dicts) for r in rows),
            on_baseline=base is not None,
            max_states=MAX_STATES,
        )
        tx.raw.execute(
            "UPDATE main.receipts SET response = "
            "(SELECT k.response FROM temp.kept_responses k WHERE k.key = receipts.key) "
            "WHERE key IN (SELECT key FROM temp.kept_responses)"
        )
        tx.raw.execute("DROP TABLE temp.kept_responses")
    ledger.states.clear()  # states cached from the replaced projections
