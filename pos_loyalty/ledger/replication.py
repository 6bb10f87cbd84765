"""The till's side of sync, on its ledger: what to push, what the server answered, what to
apply from other tills. Every method is one ledger transaction.

- Own events are pushed in ``seq`` order from ``acked_seq + 1``; ``acked_seq`` moves only in
  :meth:`Replica.record_answers`, i.e. after the server's answer, in a local transaction. A
  crash before that resends the batch, which the server answers as ``duplicate``.
- Pulled events of other tills are appended to ``events`` with their own till id, seq and
  hashes, folded into the projections with the same functions as local appends, and the
  cursor moves in the same transaction. An event already present (same id) is skipped.
  Each one is checked first, as ``verify`` would: its hash must be the chain hash of its
  content after its ``prev_hash``, and that ``prev_hash`` the hash of the same till's event
  before it wherever this till holds that one (in the page, in ``events`` or as a stub). A
  page with an event that fails is refused whole (``PulledEventRefused``): nothing applied,
  the cursor stays, so a damaged or forged event never reaches the projections.
  A remote sale whose receipt key is already used here by another event is kept (its
  balances count) but its receipt row is not written; a conflict is recorded.
- A sale using a single-use coupon that another till's sale used first (both offline) is
  accepted by the server and flagged ``coupon_reused``: the sale stands everywhere (its
  balances count) and the conflict is recorded here as well as on the server.
- A derived-id expiry another till recorded first comes back as ``duplicate`` with the
  winner's payload: the difference between the two copies is booked here by a *local-only*
  adjustment (id derived from the expiry and the till), which the server checks and keeps in
  the till's chain but neither counts nor serves. So this till's balance equals the server's.

This module is imported by ``sync`` (both ends); it does not import ``sync``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from pos_loyalty.domain.events import Event, Kind, Posting, Unit
from pos_loyalty.domain.ids import derived_id
from pos_loyalty.domain.state import CustomerState

from . import schema
from .codec import (
    GENESIS,
    at_text,
    chain_hash,
    encode_payload,
    event_from_row,
    id_text,
    kind_text,
)
from .projections import (
    apply_shared,
    apply_side_tables,
    load_state,
    side_table_problem,
    store_state,
)
from .snapshot import baseline, baseline_heads
from .store import Ledger

# Answer reasons of events the server accepted (stored, counted, served) but flagged for an
# operator: the till records a conflict for them too.
COUPON_REUSED = "coupon_reused"  # a single-use coupon another till's sale used first
FLAGGED_REASONS = frozenset({COUPON_REUSED})


def reconcile_id(expiry_id: str, terminal_id: str) -> str:
    """The id of the local-only event that books a superseded expiry's difference."""
    return derived_id("expiry-reconcile", expiry_id, terminal_id)


def reconcile_postings(own_payload: str, winner_payload: str) -> list[dict[str, Any]]:
    """Postings turning the effect of ``own`` into that of ``winner`` (winner - own)."""
    diff: dict[tuple[str, str], int] = defaultdict(int)
    for p in json.loads(winner_payload)["p"]:
        diff[(p["program"], p["unit"])] += int(p["delta"])
    for p in json.loads(own_payload)["p"]:
        diff[(p["program"], p["unit"])] -= int(p["delta"])
    return [
        {"program": program, "unit": unit, "delta": delta}
        for (program, unit), delta in sorted(diff.items())
        if delta
    ]


def _now() -> str:
    return datetime.now(UTC).isoformat()


class PulledEventRefused(ValueError):
    """A pulled event does not check out (its hash, its link to the event before it, or its
    payload): the page was not applied."""


@dataclass(frozen=True)
class StoredEvent:
    """An ``events`` row as it travels: exactly what the recording till stored."""

    id: str
    terminal_id: str
    seq: int
    kind: str
    at: str
    customer_id: str | None
    key: str | None
    payload: str
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True)
class Stub:
    terminal_id: str
    seq: int
    id: str
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True)
class Answer:
    """The server's answer for one pushed event."""

    id: str
    seq: int
    status: str  # accepted | duplicate | conflict
    reason: str | None = None
    message: str | None = None
    winner_payload: str | None = None


@dataclass(frozen=True)
class SyncState:
    epoch: int
    acked_seq: int
    cursor: str | None
    last_push_at: str | None
    last_pull_at: str | None


@dataclass(frozen=True)
class Credentials:
    server_url: str
    terminal_id: str
    merchant_id: str
    store_id: str
    credential: str


@dataclass
class Applied:
    applied: int = 0
    skipped: int = 0
    conflicts: int = 0


class Replica:
    """Sync bookkeeping over one till's ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.terminal_id = ledger.terminal_id

    # -- state -----------------------------------------------------------------------------
    @staticmethod
    def _state(conn: Connection) -> SyncState:
        row = conn.execute(select(schema.sync_state).where(schema.sync_state.c.id == 1)).first()
        if row is None:
            return SyncState(1, 0, None, None, None)
        return SyncState(row.epoch, row.acked_seq, row.cursor, row.last_push_at, row.last_pull_at)

    @staticmethod
    def _save_state(conn: Connection, **values: Any) -> None:
        done = conn.execute(
            update(schema.sync_state).where(schema.sync_state.c.id == 1).values(**values)
        ).rowcount
        if not done:
            row = {"id": 1, "epoch": 1, "acked_seq": 0, **values}
            conn.execute(insert(schema.sync_state).values(**row))

    def state(self) -> SyncState:
        with self.ledger.reader() as tx:
            return self._state(tx.conn)

    def waiting(self) -> int:
        """Own events the server has not acknowledged yet."""
        with self.ledger.reader() as tx:
            seq, _ = tx.head()
            return max(0, seq - self._state(tx.conn).acked_seq)

    def conflict_count(self) -> int:
        with self.ledger.reader() as tx:
            return int(
                tx.conn.execute(
                    select(func.count()).select_from(schema.sync_conflicts)
                ).scalar_one()
            )

    def conflicts(self) -> list[dict[str, Any]]:
        with self.ledger.reader() as tx:
            return [
                dict(r._mapping)
                for r in tx.conn.execute(
                    select(schema.sync_conflicts).order_by(schema.sync_conflicts.c.id)
                )
            ]

    # -- credentials -----------------------------------------------------------------------
    def credentials(self) -> Credentials | None:
        with self.ledger.reader() as tx:
            row = tx.conn.execute(
                select(schema.sync_credentials).where(schema.sync_credentials.c.id == 1)
            ).first()
        if row is None:
            return None
        return Credentials(
            row.server_url, row.terminal_id, row.merchant_id, row.store_id, row.credential
        )

    def save_credentials(self, creds: Credentials) -> None:
        if creds.terminal_id != self.terminal_id:
            raise ValueError(
                f"the server paired terminal {creds.terminal_id}, but this till is "
                f"{self.terminal_id}: set terminal.id in the configuration"
            )
        with self.ledger.transaction() as tx:
            tx.conn.execute(
                schema.sync_credentials.delete().where(schema.sync_credentials.c.id == 1)
            )
            tx.conn.execute(
                insert(schema.sync_credentials).values(
                    id=1,
                    server_url=creds.server_url,
                    terminal_id=creds.terminal_id,
                    merchant_id=creds.merchant_id,
                    store_id=creds.store_id,
                    credential=creds.credential,
                    paired_at=_now(),
                )
            )

    # -- push ------------------------------------------------------------------------------
    def unsynced(self, limit: int, after: int | None = None) -> list[StoredEvent]:
        """Own events after ``acked_seq`` (or after seq ``after``), in seq order, at most
        ``limit``."""
        with self.ledger.reader() as tx:
            acked = self._state(tx.conn).acked_seq if after is None else after
            # Plain SQL on the DB-API connection, the stored forms turned into texts here (what
            # ``schema.EventId``/``EventKind``/``EventAt`` do for SQLAlchemy readers): the
            # catch-up of a long-offline till reads many rows, and the per-value type
            # processing was a fifth of this read.
            rows = tx.raw.execute(_UNSYNCED, (self.terminal_id, acked, limit)).fetchall()
            out: list[StoredEvent] = []
            for i, t, s, k, a, c, key, p, ph, h in rows:
                # A NULL prev_hash is the hash of the event before (0006_events).
                if ph is None and out and out[-1].seq == s - 1:
                    ph = out[-1].hash
                ph = tx.prev_hash(t, s, ph)
                out.append(
                    StoredEvent(
                        id_text(i),
                        t,
                        s,
                        kind_text(k),
                        at_text(a),
                        None if c is None else id_text(c),
                        key,
                        tx.payload_text(p),
                        ph,
                        bytes(h),
                    )
                )
            return out

    def record_answers(
        self, sent: Sequence[StoredEvent], answers: Sequence[Answer], epoch: int
    ) -> list[Event]:
        """Mark ``sent`` acknowledged after the server's ``answers`` (one transaction);
        record conflicts; book superseded expiries. Returns the local-only events appended."""
        by_id = {a.id: a for a in answers}
        if [a.seq for a in answers] != [e.seq for e in sent]:
            raise ValueError("the server's answers do not match the batch sent")
        booked: list[Event] = []
        with self.ledger.transaction() as tx:
            conn = tx.conn
            state = self._state(conn)
            if sent and sent[-1].seq <= state.acked_seq:
                return []  # answered already (a crash-resend): nothing to do twice
            for stored in sent:
                answer = by_id[stored.id]
                if answer.status == "conflict" or answer.reason in FLAGGED_REASONS:
                    self._conflict(conn, "push", stored, answer.reason or "conflict", answer)
                elif answer.winner_payload is not None:
                    postings = reconcile_postings(stored.payload, answer.winner_payload)
                    rid = reconcile_id(stored.id, self.terminal_id)
                    if postings and not tx.has_event(rid):
                        booked.extend(
                            tx.append(
                                [
                                    Event(
                                        rid,
                                        Kind.ACCOUNT_ADJUSTED,
                                        self.terminal_id,
                                        datetime.fromisoformat(stored.at),
                                        stored.customer_id,
                                        postings=tuple(
                                            Posting(p["program"], Unit(p["unit"]), p["delta"])
                                            for p in postings
                                        ),
                                        data={
                                            "reason": "expiry reconciled with the server",
                                            "reconciles": stored.id,
                                        },
                                    )
                                ]
                            )
                        )
            self._save_state(
                conn,
                acked_seq=max(state.acked_seq, sent[-1].seq) if sent else state.acked_seq,
                epoch=epoch,
                last_push_at=_now(),
            )
        return booked

    def rewind(self, server_seq_head: int) -> None:
        """The server holds this till's chain only up to ``server_seq_head`` (it was restored
        from a backup): push again from there."""
        with self.ledger.transaction() as tx:
            state = self._state(tx.conn)
            if server_seq_head < state.acked_seq:
                self._save_state(tx.conn, acked_seq=server_seq_head)

    def server_behind(self, server_head_seq: int, message: str) -> bool:
        """The server says it holds this till's chain only up to ``server_head_seq``: when
        that is behind the acknowledged seq (it was restored from a backup and lost events
        it had acknowledged), rewind to it, so that the events after it are pushed again,
        and record it in ``sync_conflicts`` (reason ``server_behind``). Returns whether it
        rewound. The caller holds the sync worker's lock (no push meanwhile)."""
        with self.ledger.transaction() as tx:
            acked = self._state(tx.conn).acked_seq
            if server_head_seq >= acked:
                return False
            self._save_state(tx.conn, acked_seq=server_head_seq)
            self._record_sync_event(
                tx.conn,
                server_head_seq,
                "server_behind",
                f"{message}: the server holds this till's chain up to seq {server_head_seq}, "
                f"it had acknowledged up to {acked}; sending seq {server_head_seq + 1} on again",
            )
        return True

    def reset_cursor(self, message: str) -> tuple[str | None, bool]:
        """The server refused the pull cursor (``cursor_ahead``: it was restored from a
        backup after this till had pulled further): pull again from the start, or from the
        snapshot this till was bootstrapped from, and record it in ``sync_conflicts``
        (reason ``cursor_ahead``). Events pulled again are skipped by id. Returns the new
        cursor and whether it changed (not: the snapshot's own position was refused)."""
        with self.ledger.transaction() as tx:
            old = self._state(tx.conn).cursor
            base = baseline(tx.conn)
            cursor = base.cursor if base is not None else None
            if old == cursor:
                return cursor, False
            self._save_state(tx.conn, cursor=cursor)
            self._record_sync_event(
                tx.conn,
                0,
                "cursor_ahead",
                f"{message}: pull cursor {old} reset to {cursor or 'the start'}",
            )
        return cursor, True

    def _record_sync_event(self, conn: Connection, seq: int, reason: str, message: str) -> None:
        """A ``sync_conflicts`` row about the sync itself (no event of its own)."""
        conn.execute(
            insert(schema.sync_conflicts).values(
                direction="pull",
                event_id="",
                terminal_id=self.terminal_id,
                seq=seq,
                reason=reason,
                message=message[:2000],
                recorded_at=_now(),
            )
        )

    def mark_pushed(self) -> None:
        with self.ledger.transaction() as tx:
            self._save_state(tx.conn, last_push_at=_now())

    # -- pull ------------------------------------------------------------------------------
    def apply_pulled(
        self, events: Iterable[StoredEvent], stubs: Iterable[Stub], cursor: str
    ) -> Applied:
        """Append other tills' events, fold them, store stubs and the cursor: one transaction."""
        out = Applied()
        events = list(events)
        with self.ledger.transaction() as tx:
            conn = tx.conn
            ev = schema.events
            present: dict[str, str] = {}  # id -> the till whose event holds it here
            ids = [e.id for e in events]
            for i in range(0, len(ids), 500):
                present.update(
                    (r.id, r.terminal_id)
                    for r in conn.execute(
                        select(ev.c.id, ev.c.terminal_id).where(ev.c.id.in_(ids[i : i + 500]))
                    )
                )
            states: dict[str, tuple[CustomerState, CustomerState]] = {}
            rows: list[dict[str, Any]] = []
            stubs = list(stubs)
            # (till, seq) -> hashes of the slots this page brings (an event and a stub can
            # share a slot: a restored till's new epoch), checked before the ledger is asked.
            held: dict[tuple[str, int], set[bytes]] = defaultdict(set)
            for stub in stubs:
                held[(stub.terminal_id, stub.seq)].add(stub.hash)
            links = _Links(conn, held)
            for stored in events:
                if stored.terminal_id == self.terminal_id:
                    out.skipped += 1
                    continue
                holder = present.get(stored.id)
                if holder is not None:
                    out.skipped += 1
                    if holder != stored.terminal_id:
                        # The same id in another till's slot: a derived-id expiry both tills
                        # recorded, this till's copy held. That slot of the other till's
                        # chain is kept as a stub, so its chain has no gap here.
                        stubs.append(
                            Stub(
                                stored.terminal_id,
                                stored.seq,
                                stored.id,
                                stored.prev_hash,
                                stored.hash,
                            )
                        )
                    held[(stored.terminal_id, stored.seq)].add(stored.hash)
                    continue
                taken = conn.execute(
                    select(ev.c.id).where(
                        ev.c.terminal_id == stored.terminal_id, ev.c.seq == stored.seq
                    )
                ).first()
                if taken is not None:
                    self._conflict(
                        conn,
                        "pull",
                        stored,
                        "seq_taken",
                        Answer(
                            stored.id,
                            stored.seq,
                            "conflict",
                            message=f"seq {stored.seq} of till {stored.terminal_id} is already "
                            f"held here by event {taken.id}; not applied",
                        ),
                    )
                    out.conflicts += 1
                    continue
                event = _checked(links, stored)
                held[(stored.terminal_id, stored.seq)].add(stored.hash)
                rows.append(
                    {
                        "id": stored.id,
                        "terminal_id": stored.terminal_id,
                        "seq": stored.seq,
                        "kind": stored.kind,
                        "at": stored.at,
                        "customer_id": stored.customer_id,
                        "key": stored.key,
                        "payload": encode_payload(stored.payload, tx.dicts),
                        "prev_hash": stored.prev_hash,
                        "hash": stored.hash,
                    }
                )
                present[stored.id] = stored.terminal_id
                problem = side_table_problem(conn, event)
                if problem is None:
                    apply_side_tables(conn, event)
                else:
                    apply_shared(conn, event)
                    self._conflict(
                        conn,
                        "pull",
                        stored,
                        problem[0],
                        Answer(stored.id, stored.seq, "conflict", message=problem[1]),
                    )
                    out.conflicts += 1
                if event.customer_id is not None and event.postings:
                    if event.customer_id not in states:
                        loaded = load_state(conn, event.customer_id)
                        states[event.customer_id] = (loaded, loaded.copy())
                    states[event.customer_id][1].apply(event)
                out.applied += 1
            # Rows go in one executemany, after the side-table checks above read the
            # receipts; ``pos`` (local order) still follows the order of ``rows``.
            if rows:
                conn.execute(insert(ev), rows)
            for before, after in states.values():
                store_state(conn, before, after)
            for stub in stubs:
                if stub.terminal_id == self.terminal_id:
                    continue
                unlinked = links.problem(stub.terminal_id, stub.seq, stub.prev_hash)
                if unlinked:
                    raise PulledEventRefused(
                        f"the server sent a stub for event {stub.id} (till {stub.terminal_id}, "
                        f"seq {stub.seq}) that {unlinked}"
                    )
                exists = conn.execute(
                    select(schema.chain_stubs.c.seq).where(
                        schema.chain_stubs.c.terminal_id == stub.terminal_id,
                        schema.chain_stubs.c.seq == stub.seq,
                        schema.chain_stubs.c.hash == stub.hash,
                    )
                ).first()
                if exists is None:
                    conn.execute(
                        insert(schema.chain_stubs).values(
                            terminal_id=stub.terminal_id,
                            seq=stub.seq,
                            event_id=stub.id,
                            prev_hash=stub.prev_hash,
                            hash=stub.hash,
                        )
                    )
            self._save_state(conn, cursor=cursor, last_pull_at=_now())
        return out

    # -- helpers ---------------------------------------------------------------------------
    def _conflict(
        self, conn: Connection, direction: str, stored: StoredEvent, reason: str, answer: Answer
    ) -> None:
        conn.execute(
            insert(schema.sync_conflicts).values(
                direction=direction,
                event_id=stored.id,
                terminal_id=stored.terminal_id,
                seq=stored.seq,
                reason=reason,
                message=answer.message or reason,
                recorded_at=_now(),
            )
        )


def _checked(links: _Links, stored: StoredEvent) -> Event:
    """The pulled event decoded, after the checks ``verify`` would make of it on this till
    (``PulledEventRefused`` when one fails): its hash, and its link (``_Links``)."""
    name = f"event {stored.id} (till {stored.terminal_id}, seq {stored.seq})"
    try:
        event = event_from_row(stored)
        digest = chain_hash(stored.prev_hash, event)
    except (ValueError, KeyError, TypeError) as exc:
        raise PulledEventRefused(f"the server sent {name} that does not decode: {exc}") from None
    if digest != stored.hash:
        raise PulledEventRefused(f"the server sent {name} whose hash does not match its content")
    problem = links.problem(stored.terminal_id, stored.seq, stored.prev_hash)
    if problem:
        raise PulledEventRefused(f"the server sent {name} that {problem}")
    return event


class _Links:
    """Whether a pulled slot (an event or a stub) links to what this till holds: it must
    follow one of the slots held at the same till's ``seq - 1`` — in the page (``held``), in
    ``events``, in ``chain_stubs``, or the head of the bootstrap baseline. A restored till's
    chain forks (a new epoch), so there may be several. Nothing held there (events the
    server does not serve this till, slots before the baseline) is no evidence either way."""

    def __init__(self, conn: Connection, held: dict[tuple[str, int], set[bytes]]) -> None:
        self.conn = conn
        self.held = held
        self._heads: dict[str, tuple[int, bytes]] | None = None  # read once, when needed

    def problem(self, terminal_id: str, seq: int, prev_hash: bytes) -> str | None:
        if seq == 1:  # a chain's first event follows nothing
            return None if prev_hash == GENESIS else "is a first event that follows another"
        before = set(self.held.get((terminal_id, seq - 1), ()))
        if prev_hash in before:  # the usual case: the slot before is in this page
            return None
        for table in (schema.events, schema.chain_stubs):
            before.update(
                bytes(row.hash)
                for row in self.conn.execute(
                    select(table.c.hash).where(
                        table.c.terminal_id == terminal_id, table.c.seq == seq - 1
                    )
                )
            )
        if prev_hash in before:
            return None
        if self._heads is None:  # the baseline's header: decoded once per page, if at all
            self._heads = baseline_heads(self.conn)
        head = self._heads.get(terminal_id)
        if head is not None and head[0] == seq - 1:
            before.add(head[1])
        if before and prev_hash not in before:
            return "does not chain to the event before it held here"
        return None


_UNSYNCED = (
    "SELECT id, terminal_id, seq, kind, at, customer_id, key, payload, prev_hash, hash"
    " FROM events WHERE terminal_id = ? AND seq > ? ORDER BY seq LIMIT ?"
)
