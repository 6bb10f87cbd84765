"""The till's ledger: one SQLite file in WAL mode, synchronous=FULL, migrated by Alembic.

Every write goes through ``Ledger.transaction()``: ``BEGIN IMMEDIATE`` (so concurrent
writers queue instead of failing mid-way), the events appended with the next gap-free
sequence numbers and their chain hashes, the projections updated, then ``COMMIT`` — durable
before the caller answers (DESIGN invariant 5).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, create_engine, event, select
from sqlalchemy.exc import DatabaseError, OperationalError

from pos_loyalty.domain.events import Event
from pos_loyalty.domain.state import CustomerState

from . import schema
from .codec import (
    GENESIS,
    PAYLOAD,
    RESPONSE,
    Dictionaries,
    chain_hash,
    decode_payload,
    encode_payload,
    event_from_row,
    id_text,
    pack_response,
    payload_of,
    response_text,
    train,
    train_due,
    unpack_response,
)
from .projections import apply_side_tables, load_state, raw_connection, store_state

MIGRATIONS = Path(__file__).parent / "migrations"


class LedgerError(Exception):
    """The ledger file cannot be used (corrupt, not a ledger, locked for too long)."""


class CardRow(NamedTuple):
    """A ``cards`` row (columns in table order)."""

    code: str
    customer_id: str
    status: str
    issued_at: str
    reason: str | None


class CustomerRow(NamedTuple):
    """A ``customers`` row (columns in table order)."""

    customer_id: str
    enrolled_at: str
    profile: str


# Hot reads and the append path run on the DB-API connection inside the SQLAlchemy
# transaction (same connection, same snapshot): SQLAlchemy's per-statement work (building,
# caching, result objects) costs several times what SQLite spends on these by-key reads.
_CARD = "SELECT code, customer_id, status, issued_at, reason FROM cards WHERE code = ?"
_CUSTOMER = "SELECT customer_id, enrolled_at, profile FROM customers WHERE customer_id = ?"
_RECEIPT = "SELECT key, event_id, refunded, response FROM receipts WHERE key = ?"
_EVENT_PAYLOAD = "SELECT payload FROM events WHERE id = ?"
_HAS_EVENT = "SELECT 1 FROM events WHERE id = ?"
_HEAD = "SELECT seq, hash FROM heads WHERE terminal_id = ?"
_NEWEST_POS = "SELECT max(pos) FROM events WHERE customer_id = ?"  # ix_events_customer
_INSERT_EVENT = (
    "INSERT INTO events (id, terminal_id, seq, kind, at, customer_id, key, payload, "
    "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SET_RESPONSE = "UPDATE receipts SET response = ? WHERE key = ?"
_REDEEMED = "SELECT sum(points) FROM redemptions WHERE terminal_id = ? AND at >= ? AND at < ?"
_REDEEMED_BY = _REDEEMED + " AND customer_id = ?"
_DICTIONARIES = "SELECT id, purpose, zdict FROM codec_dicts"
_DICTIONARY = "SELECT purpose, zdict FROM codec_dicts WHERE id = ?"
_INSERT_DICTIONARY = "INSERT INTO codec_dicts (purpose, zdict) VALUES (?, ?)"
# Training samples (rare: ``codec.train_due``): the newest payloads, this till's newest answers
# (``+terminal_id``: walk ``pos`` backwards, not every event of the till through its index).
_RECENT_PAYLOADS = "SELECT payload FROM events ORDER BY pos DESC LIMIT 128"
_RECENT_RESPONSES = (
    "SELECT response FROM receipts WHERE key IN (SELECT 'sale:' || key FROM events "
    "WHERE +terminal_id = ? AND kind = 'sale.committed' ORDER BY pos DESC LIMIT 64)"
)
_UPDATE_HEAD = "UPDATE heads SET seq = ?, hash = ? WHERE terminal_id = ?"
_INSERT_HEAD = "INSERT INTO heads (terminal_id, seq, hash) VALUES (?, ?, ?)"


@dataclass(frozen=True)
class Receipt:
    key: str
    event_id: str
    request_hash: str
    refunded: dict[int, int]
    response: dict[str, Any]


# Tests set this so that every state served from the cache is compared with the one read
# from the projection tables (a mismatch raises): the whole suite then checks the cache.
CHECK_STATE_CACHE = os.environ.get("POS_LOYALTY_CHECK_STATE_CACHE") == "1"


class StateCache:
    """Customer states as of their newest event, so a sale need not re-read every lot.

    A regular customer holds hundreds of lots (one per earning sale until it expires); reading
    and parsing them on every quote and commit was most of a commit's cost. An entry is keyed
    by customer id and valid only for the position (``events.pos``) of that customer's newest
    event: any event for the customer, appended by this process, another thread or the sync
    process, changes that position, and the next read misses and reloads from the tables.
    States read in a write transaction, or written by it, enter the cache only after it
    commits (a rolled-back position can be reused). Entries are never handed out: callers get
    copies (cheap: lots are immutable, so only the dicts are copied).
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._entries: OrderedDict[str, tuple[int | None, CustomerState]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, customer_id: str, version: int | None) -> CustomerState | None:
        with self._lock:
            entry = self._entries.get(customer_id)
            if entry is None or entry[0] != version:
                return None
            self._entries.move_to_end(customer_id)
            return entry[1]

    def put(self, customer_id: str, version: int | None, state: CustomerState) -> None:
        with self._lock:
            self._entries[customer_id] = (version, state)
            self._entries.move_to_end(customer_id)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _state_fingerprint(state: CustomerState) -> tuple[Any, ...]:
    lots = sorted(
        (lot.lot_id, lot.earned_at, lot.expires_at, lot.remaining)
        for account in state.all_accounts().values()
        for lot in account.lots.values()
    )
    return state.customer_id, sorted(state.balances().items()), lots


def make_engine(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}", future=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (pysqlite recipe)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 10000")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = FULL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front; readers get a deferred (snapshot) transaction.
        read_only = conn.get_execution_options().get("read_only", False)
        raw_connection(conn).execute("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Ledger:
    """A till's ledger file."""

    def __init__(self, path: Path, terminal_id: str) -> None:
        self.path = Path(path)
        self.terminal_id = terminal_id
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(self.path)
        self.states = StateCache()
        # The compression dictionaries of stored payloads and answers (``codec``).
        self.dicts = Dictionaries()
        try:
            migrate(self.engine)
            with self.reader() as tx:
                for ident, purpose, zdict in tx.raw.execute(_DICTIONARIES).fetchall():
                    self.dicts.add(ident, purpose, bytes(zdict))
        except (DatabaseError, OperationalError, sqlite3.Error, ValueError, TypeError) as exc:
            # sqlite3's own errors: ``BEGIN`` is issued on the DB-API connection (make_engine).
            self.engine.dispose()
            reason = exc.orig if isinstance(exc, DatabaseError | OperationalError) else exc
            raise LedgerError(f"{self.path} is not a usable ledger: {reason}") from None

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self.engine.begin() as conn:
            tx = Tx(conn, self.terminal_id, self.states, writer=True, dicts=self.dicts)
            yield tx
        tx.dicts.publish()  # dictionaries it trained are stored now
        # Committed: what the transaction read or wrote is now what the tables hold.
        for customer_id, (version, state) in tx.pending_states.items():
            self.states.put(customer_id, version, state)

    @contextmanager
    def reader(self) -> Iterator[Tx]:
        with self.engine.connect() as conn:
            conn.execution_options(read_only=True)
            with conn.begin() as trans:
                try:
                    yield Tx(conn, self.terminal_id, self.states, dicts=self.dicts)
                finally:
                    trans.rollback()


class Tx:
    """Reads and appends inside one transaction."""

    def __init__(
        self,
        conn: Connection,
        terminal_id: str,
        states: StateCache | None = None,
        *,
        writer: bool = False,
        dicts: Dictionaries | None = None,
    ) -> None:
        self.conn = conn
        self.terminal_id = terminal_id
        self.raw = raw_connection(conn)
        # Compression dictionaries (``codec``): this transaction's view of the ledger's.
        self.dicts = (dicts or Dictionaries()).child(self._dictionary)
        self.states = states if states is not None else StateCache(0)
        self.writer = writer
        # States this (write) transaction read or produced, by customer: (version, state).
        self.pending_states: dict[str, tuple[int | None, CustomerState]] = {}

    # -- reads ----------------------------------------------------------------------------
    def state(self, customer_id: str) -> CustomerState:
        """The customer's folded state (a copy the caller may change)."""
        version = self.raw.execute(_NEWEST_POS, (customer_id,)).fetchone()[0]
        pending = self.pending_states.get(customer_id)
        known = (
            pending[1]
            if pending is not None and pending[0] == version
            else self.states.get(customer_id, version)
        )
        if known is not None:
            if CHECK_STATE_CACHE:
                stored = load_state(self.conn, customer_id)
                if _state_fingerprint(stored) != _state_fingerprint(known):
                    raise LedgerError(
                        f"state cache of customer {customer_id} differs from the ledger"
                    )
            return known.copy()
        state = load_state(self.conn, customer_id)
        if self.writer:
            self.pending_states[customer_id] = (version, state.copy())
        else:
            self.states.put(customer_id, version, state.copy())
        return state

    def card(self, code: str) -> CardRow | None:
        row = self.raw.execute(_CARD, (code,)).fetchone()
        return None if row is None else CardRow(*row)

    def cards_of(self, customer_id: str) -> list[Any]:
        return list(
            self.conn.execute(
                select(schema.cards)
                .where(schema.cards.c.customer_id == customer_id)
                .order_by(schema.cards.c.issued_at)
            )
        )

    def customer(self, customer_id: str) -> CustomerRow | None:
        row = self.raw.execute(_CUSTOMER, (customer_id,)).fetchone()
        return None if row is None else CustomerRow(*row)

    def receipt(self, key: str) -> Receipt | None:
        row = self.raw.execute(_RECEIPT, (key,)).fetchone()
        if row is None:
            return None
        key, event_id, refunded, response = row
        event_id = id_text(event_id)
        # The request hash is the event's own (``data.request_hash``): read when it exists.
        found = self.raw.execute(_EVENT_PAYLOAD, (event_id,)).fetchone()
        if found is None:
            raise LedgerError(f"receipt {key!r} names event {event_id}, which is not in the ledger")
        request_hash = json.loads(self.payload_text(found[0]))["d"]["request_hash"]
        return Receipt(
            key,
            event_id,
            str(request_hash),
            {int(k): int(v) for k, v in json.loads(refunded).items()},
            unpack_response(response, self.dicts),
        )

    def event(self, event_id: str) -> Event | None:
        row = self.conn.execute(select(schema.events).where(schema.events.c.id == event_id)).first()
        return None if row is None else event_from_row(row, self.dicts)

    def payload_text(self, stored: str | bytes) -> str:
        """The canonical JSON of a stored ``events.payload`` (``codec.decode_payload``)."""
        return decode_payload(stored, self.dicts)

    def has_event(self, event_id: str) -> bool:
        return self.raw.execute(_HAS_EVENT, (event_id,)).fetchone() is not None

    def history(
        self, customer_id: str, limit: int = 50, before: int | None = None
    ) -> list[tuple[int, Event]]:
        """Events of a customer, newest first, with their local position (for paging)."""
        query = select(schema.events).where(schema.events.c.customer_id == customer_id)
        if before is not None:
            query = query.where(schema.events.c.pos < before)
        query = query.order_by(schema.events.c.pos.desc()).limit(limit)
        return [(row.pos, event_from_row(row, self.dicts)) for row in self.conn.execute(query)]

    def redeemed_between(self, start: str, end: str, customer_id: str | None = None) -> int:
        """Points this till's sales redeemed with ``start <= at < end`` (ISO UTC strings),
        from the ``redemptions`` projection (one row per sale that redeemed points)."""
        if customer_id is None:
            row = self.raw.execute(_REDEEMED, (self.terminal_id, start, end)).fetchone()
        else:
            args = (self.terminal_id, start, end, customer_id)
            row = self.raw.execute(_REDEEMED_BY, args).fetchone()
        return int(row[0] or 0)

    def head(self, terminal_id: str | None = None) -> tuple[int, bytes]:
        row = self.raw.execute(_HEAD, (terminal_id or self.terminal_id,)).fetchone()
        return (0, GENESIS) if row is None else (row[0], row[1])

    def count_events(self) -> int:
        from sqlalchemy import func

        return int(self.conn.execute(select(func.count()).select_from(schema.events)).scalar_one())

    # -- writes ---------------------------------------------------------------------------
    def append(
        self, events: list[Event], loaded: Mapping[str, CustomerState] | None = None
    ) -> list[Event]:
        """Append this till's new events: sequence, chain, projections. Returns them with seq."""
        seq, prev = self.head()
        stored: list[Event] = []
        states: dict[str, tuple[CustomerState, CustomerState]] = {}
        newest: dict[str, int] = {}  # customer -> position of their newest event appended
        for ev in events:
            if ev.terminal_id != self.terminal_id:
                raise ValueError("a till appends only its own events")
            seq += 1
            if train_due(seq):
                self._train()
            ev = replace(ev, seq=seq)
            digest = chain_hash(prev, ev)
            cursor = self.raw.execute(
                _INSERT_EVENT,
                (
                    ev.id,
                    ev.terminal_id,
                    ev.seq,
                    ev.kind.value,
                    ev.at.isoformat(),
                    ev.customer_id,
                    ev.key,
                    encode_payload(payload_of(ev), self.dicts),
                    prev,
                    digest,
                ),
            )
            prev = digest
            if ev.customer_id is not None and cursor.lastrowid is not None:
                newest[ev.customer_id] = cursor.lastrowid
            apply_side_tables(self.conn, ev)
            if ev.customer_id is not None and ev.postings:
                if ev.customer_id not in states:
                    # ``loaded``: the caller read this customer's stored state in this same
                    # transaction already (an untouched copy), so it is not read again.
                    known = (loaded or {}).get(ev.customer_id)
                    before = known if known is not None else self.state(ev.customer_id)
                    states[ev.customer_id] = (before, before.copy())
                states[ev.customer_id][1].apply(ev)
            stored.append(ev)
        for customer_id, (before, after) in states.items():
            store_state(self.conn, before, after)
            self.pending_states[customer_id] = (newest[customer_id], after)
        for customer_id in newest.keys() - states.keys():
            self.pending_states.pop(customer_id, None)  # not folded here: reload next time

        if stored:
            self._set_head(seq, prev)
        return stored

    def set_response(self, key: str, response: dict[str, Any]) -> None:
        self.raw.execute(_SET_RESPONSE, (pack_response(response, self.dicts), key))

    # -- compression dictionaries (``codec``) ----------------------------------------------
    def _dictionary(self, ident: int) -> tuple[str, bytes] | None:
        row = self.raw.execute(_DICTIONARY, (ident,)).fetchone()
        return None if row is None else (str(row[0]), bytes(row[1]))

    def _train(self) -> None:
        """Store dictionaries trained from the newest payloads and this till's newest answers;
        rows written from now on use them (in this transaction, and after it commits)."""
        rows = self.raw.execute(_RECENT_PAYLOADS).fetchall()
        payloads = [self.payload_text(p).encode() for (p,) in reversed(rows)]
        rows = self.raw.execute(_RECENT_RESPONSES, (self.terminal_id,)).fetchall()
        responses = [response_text(r, self.dicts) for (r,) in reversed(rows)]
        for purpose, samples in ((PAYLOAD, payloads), (RESPONSE, responses)):
            zdict = train([s for s in samples if s])
            if len(zdict) >= 1024:  # too little to learn from: keep the current one
                ident = self.raw.execute(_INSERT_DICTIONARY, (purpose, zdict)).lastrowid
                assert ident is not None
                self.dicts.add(ident, purpose, zdict)

    def _set_head(self, seq: int, digest: bytes) -> None:
        updated = self.raw.execute(_UPDATE_HEAD, (seq, digest, self.terminal_id))
        if updated.rowcount == 0:
            self.raw.execute(_INSERT_HEAD, (self.terminal_id, seq, digest))
