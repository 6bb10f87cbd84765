"""``ledger verify``: check every till's chain and sequence, rebuild the projections, compare.

Checks run as a list (in the spirit of beancount's ``ops/validation``); the first problem
found names the event: its id, till and sequence number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import create_engine, select

from . import schema
from .codec import GENESIS, chain_hash, event_from_row
from .projections import rebuild_into, snapshot
from .snapshot import (
    COMPLETE,
    baseline,
    baseline_heads,
    load_baseline_into,
    stored_digest,
    stored_header,
    stored_pages,
)
from .store import Ledger, LedgerError


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


def verify(ledger: Ledger) -> Report:
    report = Report()
    with ledger.reader() as tx:
        conn = tx.conn
        rows = list(conn.execute(select(schema.events).order_by(schema.events.c.pos)))
        report.events = len(rows)
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
        last: dict[str, tuple[int, bytes, str]] = {
            tid: (seq, digest, "") for tid, (seq, digest) in baseline_heads(conn).items()
        }
        header = stored_header(conn) if base is not None else None
        pages = list(stored_pages(conn)) if base is not None else []
        # Slots of other tills' chains whose events the server does not serve (sync): the
        # links are checked through them, the events are not held here.
        # Never for this till's own chain: every one of its events must be here, or a
        # deleted event could hide behind a forged stub.
        stubs = {
            (s.terminal_id, s.seq): (bytes(s.prev_hash), bytes(s.hash), s.event_id)
            for s in conn.execute(select(schema.chain_stubs))
            if s.terminal_id != ledger.terminal_id
        }
        events = []
        for row in rows:
            try:
                ev = event_from_row(row, tx.dicts)
            except (ValueError, KeyError, TypeError) as exc:
                report.problems.append(
                    Problem(f"cannot be decoded ({exc})", row.id, row.terminal_id, row.seq)
                )
                return report
            events.append(ev)
            seq, prev, prev_id = last.get(row.terminal_id, (0, GENESIS, ""))
            while row.seq > seq + 1 and stubs.get((row.terminal_id, seq + 1), (b"",))[0] == prev:
                seq, (_, prev, prev_id) = seq + 1, stubs[(row.terminal_id, seq + 1)]
            if row.seq != seq + 1:
                gap = f"after seq {seq}" + (f" (event {prev_id})" if prev_id else "")
                report.problems.append(
                    Problem(
                        f"sequence gap: expected seq {seq + 1} {gap}",
                        row.id,
                        row.terminal_id,
                        row.seq,
                    )
                )
                return report
            if bytes(row.prev_hash) != prev:
                report.problems.append(
                    Problem(
                        "does not chain to the previous event", row.id, row.terminal_id, row.seq
                    )
                )
                return report
            if chain_hash(prev, ev) != bytes(row.hash):
                report.problems.append(
                    Problem(
                        "content does not match its hash (edited)", row.id, row.terminal_id, row.seq
                    )
                )
                return report
            last[row.terminal_id] = (row.seq, bytes(row.hash), row.id)
        report.terminals = len(last)
        for head in conn.execute(select(schema.heads)):
            seq, digest, event_id = last.get(head.terminal_id, (0, GENESIS, ""))
            if head.seq != seq or bytes(head.hash) != digest:
                report.problems.append(
                    Problem(
                        f"till {head.terminal_id}'s head is seq {head.seq} but its chain ends at "
                        f"seq {seq}: event seq {seq + 1}..{head.seq} missing (deleted?)",
                        event_id or None,
                        head.terminal_id,
                        seq,
                    )
                )
                return report
        stored = snapshot(conn)
    scratch = create_engine("sqlite://")
    schema.metadata.create_all(scratch)
    with scratch.begin() as sconn:
        if header is not None:
            load_baseline_into(sconn, header, pages)
        rebuild_into(sconn, events, on_baseline=header is not None)
        rebuilt = snapshot(sconn)
    scratch.dispose()
    for table in stored:
        if stored[table] != rebuilt[table]:
            extra = sorted(set(stored[table]) - set(rebuilt[table]))[:3]
            missing = sorted(set(rebuilt[table]) - set(stored[table]))[:3]
            report.problems.append(
                Problem(
                    f"projection {table!r} differs from a rebuild from the events: "
                    f"stored but not rebuilt {extra}, rebuilt but not stored {missing}"
                )
            )
    return report


def rebuild(ledger: Ledger) -> None:
    """Replace the projections with a rebuild from the events (keeps cached responses); on
    a bootstrapped till from its baseline plus the events after it."""
    with ledger.transaction() as tx:
        conn = tx.conn
        base = baseline(conn)
        if base is not None and base.status != COMPLETE:
            raise LedgerError(
                "the bootstrap of this ledger is incomplete: finish it with "
                "`pos-loyalty sync --bootstrap` before rebuilding"
            )
        responses = {r.key: r.response for r in conn.execute(select(schema.receipts))}
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
        events = [
            event_from_row(r, tx.dicts)
            for r in conn.execute(select(schema.events).order_by(schema.events.c.pos))
        ]
        if base is not None:
            load_baseline_into(conn, stored_header(conn), list(stored_pages(conn)))
        rebuild_into(conn, events, on_baseline=base is not None)
        for key, response in responses.items():
            conn.execute(
                schema.receipts.update()
                .where(schema.receipts.c.key == key)
                .values(response=response)
            )
