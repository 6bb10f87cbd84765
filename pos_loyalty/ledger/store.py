"""The till's ledger: one SQLite file in WAL mode, synchronous=FULL, migrated by Alembic.

Every write goes through ``Ledger.transaction()``: ``BEGIN IMMEDIATE`` (so concurrent
writers queue instead of failing mid-way), the events appended with the next gap-free
sequence numbers and their chain hashes, the projections updated, then ``COMMIT`` — durable
before the caller answers (DESIGN invariant 5).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, cast

from sqlalchemy import Connection, Engine, create_engine, event, select
from sqlalchemy.exc import DatabaseError, DBAPIError, OperationalError

from pos_loyalty.domain.events import Event, Kind
from pos_loyalty.domain.state import CustomerState, PointsAccount

from . import schema
from .codec import (
    GENESIS,
    KIND_CODES,
    PAYLOAD,
    RESPONSE,
    Dictionaries,
    chain_hash,
    decode_payload,
    encode_payload,
    event_from_row,
    id_key,
    id_text,
    kind_key,
    pack_response,
    payload_of,
    response_text,
    time_key,
    train,
    train_due,
    unpack_response,
)
from .projections import apply_side_tables, load_state, raw_connection, store_state

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


class LedgerError(Exception):
    """The ledger file cannot be used (corrupt, not a ledger, locked for too long)."""


# How often a long-running till (agent, terminal, sync service) checks its whole file again.
FILE_CHECK_EVERY = 24 * 3600.0


class LedgerDamaged(LedgerError):
    """SQLite found the ledger file damaged while using it (a torn or overwritten page, a
    disk fault): what was being done was rolled back, nothing was written."""


# SQLite's result codes for a damaged file (``sqlite3.Error.sqlite_errorname``, Python 3.11;
# extended codes such as SQLITE_CORRUPT_INDEX start with the primary one's name).
_DAMAGE_CODES = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def damage_reason(exc: BaseException) -> str | None:
    """SQLite's words when ``exc`` (sqlite3's, or SQLAlchemy's wrapping it) says the database
    file is damaged, else None: a busy ledger, a constraint or a bug is not damage."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(orig, sqlite3.DatabaseError):
        name = getattr(orig, "sqlite_errorname", None) or ""
        if name.startswith(_DAMAGE_CODES):
            return str(orig)
    return None


def integrity_problems(
    raw: sqlite3.Connection, limit: int = 3, *, quick: bool = False
) -> list[str]:
    """The first ``limit`` problems SQLite's ``PRAGMA integrity_check`` finds in the file
    (damaged pages, b-tree order, index entries that do not match their rows, ...); [] when
    it is sound. Reads every page: for ``ledger verify`` and ``rebuild``, not the sale path.
    ``quick``: ``PRAGMA quick_check``, the same but for the index-against-row comparison,
    in time linear in the file's size (``Ledger.start_file_check``)."""
    pragma = "quick_check" if quick else "integrity_check"
    rows = raw.execute(f"PRAGMA {pragma}({int(limit)})").fetchall()
    if [row[0] for row in rows] == ["ok"]:
        return []
    # One problem per line (a row may hold several), without the "*** in database main ***"
    # heading: each becomes one line of a one-line message.
    lines = (line.strip() for row in rows for line in str(row[0]).splitlines())
    return [line for line in lines if line and not line.startswith("***")][:limit]


@contextmanager
def damage_is_a_ledger_error(path: Path) -> Iterator[None]:
    """Turn SQLite's "the file is damaged" errors raised inside into ``LedgerDamaged``
    naming the file and what to do; every other error passes unchanged."""
    try:
        yield
    except (sqlite3.DatabaseError, DBAPIError) as exc:
        reason = damage_reason(exc)
        if reason is None:
            raise
        raise damaged_error(path, reason) from exc


def damaged_error(path: Path, reason: str) -> LedgerDamaged:
    return LedgerDamaged(
        f"{path} is damaged ({reason}); nothing was changed. Stop using this till's "
        "loyalty, check the file with `pos-loyalty ledger verify` and restore it from a "
        "backup (or bootstrap the till again from the sync server)"
    )


@dataclass(frozen=True)
class FileCheck:
    """What the background check of the ledger file found (``Ledger.start_file_check``).

    Attributes:
      state: ``not_started``; ``running``; ``ok``; ``damaged`` (every transaction on the
        ledger is refused from then on); ``not_checked`` (the check itself could not run,
        e.g. the file was locked: nothing is known, nothing is refused).
      problem: SQLite's words for what is damaged, or why the check could not run.
      finished_at: when it ended (ISO, UTC).
    """

    state: str
    problem: str | None = None
    finished_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "problem": self.problem, "finished_at": self.finished_at}


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
# The head and whether its event is a row here (then the next event's prev_hash is implied
# and stored as NULL, 0006_events): not for a till's first event or one after a baseline.
_HEAD_LINKED = (
    "SELECT h.seq, h.hash, e.pos FROM heads h LEFT JOIN events e "
    "ON e.terminal_id = h.terminal_id AND e.seq = h.seq AND e.hash = h.hash "
    "WHERE h.terminal_id = ?"
)
_NEWEST_POS = "SELECT max(pos) FROM events WHERE customer_id = ?"  # ix_events_customer
_INSERT_EVENT = (
    "INSERT INTO events (id, terminal_id, seq, kind, at, customer_id, key, payload, "
    "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SET_RESPONSE = "UPDATE receipts SET response = ? WHERE key = ?"
_REDEEMED = (
    "SELECT sum(points), sum(wallet) FROM redemptions WHERE terminal_id = ? AND at >= ? AND at < ?"
)
_REDEEMED_BY = _REDEEMED + " AND customer_id = ?"
_DICTIONARIES = "SELECT id, purpose, zdict FROM codec_dicts"
_DICTIONARY = "SELECT purpose, zdict FROM codec_dicts WHERE id = ?"
_INSERT_DICTIONARY = "INSERT INTO codec_dicts (purpose, zdict) VALUES (?, ?)"
# Training samples (rare: ``codec.train_due``): the newest payloads, this till's newest answers
# (``+terminal_id``: walk ``pos`` backwards, not every event of the till through its index).
_RECENT_PAYLOADS = "SELECT payload FROM events ORDER BY pos DESC LIMIT 128"
_RECENT_RESPONSES = (
    "SELECT response FROM receipts WHERE key IN (SELECT 'sale:' || key FROM events "
    f"WHERE +terminal_id = ? AND kind = {KIND_CODES['sale.committed']} "
    "ORDER BY pos DESC LIMIT 64)"
)
_PREV_HASH = "SELECT hash FROM events WHERE terminal_id = ? AND seq = ?"
_UPDATE_HEAD = "UPDATE heads SET seq = ?, hash = ? WHERE terminal_id = ?"
_INSERT_HEAD = "INSERT INTO heads (terminal_id, seq, hash) VALUES (?, ?, ?)"


@dataclass(frozen=True)
class Receipt:
    key: str
    event_id: str
    request_hash: str
    refunded: dict[int, int]
    response: dict[str, Any]


# ``codec.canonical`` as text (the same encoder options).
_CANONICAL_TEXT = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode

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


def _touched(before: CustomerState, after: CustomerState) -> tuple[CustomerState, CustomerState]:
    """``before`` and ``after`` (``before.copy(track=True)`` with events applied) reduced to
    what ``store_state`` must write: every balance, and of each tracked account only the lots
    the fold added, replaced or removed (``PointsAccount.changed``). Every other lot is the
    same object in both states (immutable lots, shallow copies), so it needs no row change;
    comparing hundreds of them per sale was a large part of a commit. Untracked accounts
    (created by the fold) are passed whole. ``after`` stops tracking here."""
    old_accounts = before.all_accounts()
    if CHECK_STATE_CACHE:
        for program, acc in after.all_accounts().items():
            old = old_accounts.get(program)
            if acc.changed is None or old is None:
                continue
            for lot_id in acc.lots.keys() | old.lots.keys():
                if lot_id not in acc.changed and acc.lots.get(lot_id) is not old.lots.get(lot_id):
                    raise LedgerError(f"lot {lot_id} changed without being tracked")

    def reduce(acc: PointsAccount, program: str) -> PointsAccount:
        new = after_accounts.get(program)
        if new is None or new.changed is None or program not in old_accounts:
            return acc
        lots = acc.lots
        return PointsAccount(acc.balance, {i: lots[i] for i in new.changed if i in lots})

    after_accounts = after.all_accounts()
    reduced = [
        CustomerState(
            state.customer_id,
            points={p: reduce(a, p) for p, a in state.points.items()},
            stamps=state.stamps,
            lotted={k: reduce(a, k[0]) for k, a in state.lotted.items()},
            counters=state.counters,
        )
        for state in (before, after)
    ]
    for acc in after_accounts.values():
        acc.changed = None
    return reduced[0], reduced[1]


def _hash_and_payload(prev: bytes, ev: Event) -> tuple[bytes, str]:
    """``codec.chain_hash(prev, ev)`` and ``codec.payload_of(ev)`` from one encoding of the
    event's postings and data (most of its bytes), which both texts contain whole.

    Canonical JSON of a dict is ``{`` + ``"key":value`` pairs in sorted key order joined by
    ``,`` + ``}``, and a nested value encodes the same wherever it sits, so the texts are
    assembled from the encoded parts: the hashed body's keys in sorted order are at,
    customer_id, data, id, key, kind, postings, seq, terminal_id; the payload's d, p.
    ``tests/ledger/test_commit_path.py`` checks both against ``codec`` for arbitrary events,
    and every append does under ``CHECK_STATE_CACHE`` (the test suite)."""
    enc = _CANONICAL_TEXT
    data = enc(dict(ev.data))
    postings = enc([p.to_json() for p in ev.postings])
    payload = f'{{"d":{data},"p":{postings}}}'
    body = (
        f'{{"at":{enc(ev.at.isoformat())},"customer_id":{enc(ev.customer_id)},"data":{data},'
        f'"id":{enc(ev.id)},"key":{enc(ev.key)},"kind":{enc(ev.kind.value)},'
        f'"postings":{postings},"seq":{enc(ev.seq)},"terminal_id":{enc(ev.terminal_id)}}}'
    )
    digest = hashlib.sha256(prev + body.encode()).digest()
    if CHECK_STATE_CACHE and (digest != chain_hash(prev, ev) or payload != payload_of(ev)):
        raise LedgerError(f"event {ev.id}: assembled canonical JSON differs from codec's")
    return digest, payload


def _load_dictionary(raw: sqlite3.Connection, ident: int) -> tuple[str, bytes] | None:
    row = raw.execute(_DICTIONARY, (ident,)).fetchone()
    return None if row is None else (str(row[0]), bytes(row[1]))


def _read_receipt(raw: sqlite3.Connection, dicts: Dictionaries, key: str) -> Receipt | None:
    row = raw.execute(_RECEIPT, (key,)).fetchone()
    if row is None:
        return None
    key, stored_id, refunded, response = row
    event_id = id_text(stored_id)
    # The request hash is the event's own (``data.request_hash``): read when it exists.
    found = raw.execute(_EVENT_PAYLOAD, (stored_id,)).fetchone()
    if found is None:
        raise LedgerError(f"receipt {key!r} names event {event_id}, which is not in the ledger")
    request_hash = json.loads(decode_payload(found[0], dicts))["d"]["request_hash"]
    return Receipt(
        key,
        event_id,
        str(request_hash),
        {int(k): int(v) for k, v in json.loads(refunded).items()},
        unpack_response(response, dicts),
    )


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
        self.file_check = FileCheck("not_started")
        self._damage: str | None = None  # set by the file check: every transaction refused
        self._closed = threading.Event()
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
        self._closed.set()  # ends a repeating file check
        self.engine.dispose()

    def start_file_check(self, every: float | None = None) -> threading.Thread:  # float ok: s
        """Run SQLite's quick check of the whole file in a background thread (a long-running
        till: the agent, the terminal), on a read-only connection of its own: sales go on
        meanwhile (WAL), and SQLite works without holding the GIL. What it finds is in
        ``file_check``; damage makes every later transaction raise ``LedgerDamaged``.

        Why: SQLite notices a damaged page only when a statement reads it, and a damaged
        index can answer wrongly before that (a card it no longer finds is "unknown"), or
        a sale can write into a damaged b-tree and spread the damage. A till that knows its
        file is damaged stops using it and says so, as it does when a statement finds it.
        Linear in the file's size: seconds for a typical till, about a minute for a ledger of
        millions of events, in the background.

        ``every``: check again that many seconds after each check ends, until the ledger is
        closed or damage is found (a till runs for months; a disk can fail meanwhile). The
        last verdict stays in ``file_check`` while the next check runs."""
        self.file_check = FileCheck("running")

        def run() -> None:
            self._check_file()
            while every is not None and self._damage is None and not self._closed.wait(every):
                self._check_file()

        thread = threading.Thread(target=run, name="ledger-check", daemon=True)
        thread.start()
        return thread

    def _check_file(self) -> None:
        try:
            raw = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
            try:
                problems = integrity_problems(raw, quick=True)
            finally:
                raw.close()
        except Exception as exc:  # noqa: BLE001 - a thread of its own: nothing may escape
            reason = damage_reason(exc)
            if reason is None:
                self.file_check = FileCheck(
                    "not_checked", f"{type(exc).__name__}: {exc}", datetime.now(UTC).isoformat()
                )
                log.warning("ledger %s: the file check could not run: %s", self.path, exc)
                return
            problems = [reason]
        finished = datetime.now(UTC).isoformat()
        if not problems:
            self.file_check = FileCheck("ok", None, finished)
            return
        problem = "; ".join(problems)
        self._damage = problem
        self.file_check = FileCheck("damaged", problem, finished)
        log.error("ledger %s is damaged (%s): loyalty stops on this till", self.path, problem)

    def _refuse_if_damaged(self) -> None:
        if self._damage is not None:
            raise damaged_error(self.path, self._damage)

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        self._refuse_if_damaged()
        # Damage found by any statement inside: rolled back (``begin``), then named.
        with damage_is_a_ledger_error(self.path), self.engine.begin() as conn:
            tx = Tx(conn, self.terminal_id, self.states, writer=True, dicts=self.dicts)
            yield tx
        tx.dicts.publish()  # dictionaries it trained are stored now
        # Committed: what the transaction read or wrote is now what the tables hold.
        for customer_id, (version, state) in tx.pending_states.items():
            self.states.put(customer_id, version, state)

    def receipt(self, key: str) -> Receipt | None:
        """``Tx.receipt`` in a read transaction of its own: the idempotency check every commit
        makes before it queues for the write lock. Straight on a pooled DB-API connection
        (the engine's: same PRAGMAs, ``BEGIN`` issued here): SQLAlchemy's ``connect()``,
        ``begin()`` and their events cost ~15 us, more than the two by-key reads."""
        self._refuse_if_damaged()
        with damage_is_a_ledger_error(self.path):
            return self._receipt(key)

    def _receipt(self, key: str) -> Receipt | None:
        pooled = self.engine.raw_connection()
        try:
            raw = cast(sqlite3.Connection, pooled.driver_connection)
            raw.execute("BEGIN")
            try:
                dicts = self.dicts.child(functools.partial(_load_dictionary, raw))
                return _read_receipt(raw, dicts, key)
            finally:
                raw.execute("ROLLBACK")
        finally:
            pooled.close()

    @contextmanager
    def reader(self) -> Iterator[Tx]:
        self._refuse_if_damaged()
        with damage_is_a_ledger_error(self.path), self.engine.connect() as conn:
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
        version = self.raw.execute(_NEWEST_POS, (id_key(customer_id),)).fetchone()[0]
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
        return _read_receipt(self.raw, self.dicts, key)

    def event(self, event_id: str) -> Event | None:
        row = self.conn.execute(select(schema.events).where(schema.events.c.id == event_id)).first()
        return None if row is None else event_from_row(row, self.dicts)

    def payload_text(self, stored: str | bytes) -> str:
        """The canonical JSON of a stored ``events.payload`` (``codec.decode_payload``)."""
        return decode_payload(stored, self.dicts)

    def has_event(self, event_id: str) -> bool:
        return self.raw.execute(_HAS_EVENT, (id_key(event_id),)).fetchone() is not None

    def history(
        self, customer_id: str, limit: int = 50, before: int | None = None
    ) -> list[tuple[int, Event]]:
        """Events of a customer, newest first, with their local position (for paging)."""
        query = select(schema.events).where(schema.events.c.customer_id == customer_id)
        if before is not None:
            query = query.where(schema.events.c.pos < before)
        query = query.order_by(schema.events.c.pos.desc()).limit(limit)
        return [(row.pos, event_from_row(row, self.dicts)) for row in self.conn.execute(query)]

    def paired(self) -> bool:
        """Whether the till holds credentials for a sync server (``pos-loyalty pair``)."""
        return self.raw.execute("SELECT 1 FROM sync_credentials LIMIT 1").fetchone() is not None

    def last_pull_at(self) -> datetime | None:
        """When the till last applied a page pulled from the server (any sync process)."""
        row = self.raw.execute("SELECT last_pull_at FROM sync_state LIMIT 1").fetchone()
        return datetime.fromisoformat(row[0]) if row is not None and row[0] else None

    def events_of(self, customer_id: str, kind: Kind) -> list[Event]:
        """A customer's events of one kind, in local order."""
        query = (
            select(schema.events)
            .where(schema.events.c.customer_id == customer_id)
            .where(schema.events.c.kind == kind.value)
            .order_by(schema.events.c.pos)
        )
        return [event_from_row(row, self.dicts) for row in self.conn.execute(query)]

    def redeemed_between(self, start: str, end: str, customer_id: str | None = None) -> int:
        """Points this till's sales redeemed with ``start <= at < end`` (ISO UTC strings),
        from the ``redemptions`` projection (one row per sale that redeemed points)."""
        return self.spent_between(start, end, customer_id)[0]

    def spent_between(
        self, start: str, end: str, customer_id: str | None = None
    ) -> tuple[int, int]:
        """(points redeemed, wallet money paid or paid out) by this till's events with
        ``start <= at < end`` (ISO UTC strings), from the ``redemptions`` projection."""
        if customer_id is None:
            row = self.raw.execute(_REDEEMED, (self.terminal_id, start, end)).fetchone()
        else:
            args = (self.terminal_id, start, end, customer_id)
            row = self.raw.execute(_REDEEMED_BY, args).fetchone()
        return int(row[0] or 0), int(row[1] or 0)

    def head(self, terminal_id: str | None = None) -> tuple[int, bytes]:
        row = self.raw.execute(_HEAD, (terminal_id or self.terminal_id,)).fetchone()
        return (0, GENESIS) if row is None else (row[0], row[1])

    def prev_hash(self, terminal_id: str, seq: int, stored: bytes | None) -> bytes:
        """An event's ``prev_hash`` from its stored value: NULL (0006_events) stands for the
        ``hash`` of the same till's event ``seq - 1``, read here. Readers of many rows in
        seq order take it from the row before instead."""
        if stored is not None:
            return bytes(stored)
        row = self.raw.execute(_PREV_HASH, (terminal_id, seq - 1)).fetchone()
        if row is None:
            raise LedgerError(f"event {seq} of till {terminal_id} chains to a missing event")
        return bytes(row[0])

    def count_events(self) -> int:
        from sqlalchemy import func

        return int(self.conn.execute(select(func.count()).select_from(schema.events)).scalar_one())

    # -- writes ---------------------------------------------------------------------------
    def append(
        self, events: list[Event], loaded: Mapping[str, CustomerState] | None = None
    ) -> list[Event]:
        """Append this till's new events: sequence, chain, projections. Returns them with seq."""
        head = self.raw.execute(_HEAD_LINKED, (self.terminal_id,)).fetchone()
        seq, prev, linked = (0, GENESIS, None) if head is None else head
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
            digest, payload = _hash_and_payload(prev, ev)
            cursor = self.raw.execute(
                _INSERT_EVENT,
                (
                    id_key(ev.id),
                    ev.terminal_id,
                    ev.seq,
                    kind_key(ev.kind.value),
                    time_key(ev.at),  # = codec.at_key(ev.at.isoformat())
                    None if ev.customer_id is None else id_key(ev.customer_id),
                    ev.key,
                    encode_payload(payload, self.dicts),
                    None if linked is not None else prev,  # implied: the row before's hash
                    digest,
                ),
            )
            prev = digest
            linked = cursor.lastrowid
            if ev.customer_id is not None and cursor.lastrowid is not None:
                newest[ev.customer_id] = cursor.lastrowid
            apply_side_tables(self.conn, ev)
            if ev.customer_id is not None and ev.postings:
                if ev.customer_id not in states:
                    # ``loaded``: the caller read this customer's stored state in this same
                    # transaction already (an untouched copy), so it is not read again.
                    known = (loaded or {}).get(ev.customer_id)
                    before = known if known is not None else self.state(ev.customer_id)
                    states[ev.customer_id] = (before, before.copy(track=True))
                states[ev.customer_id][1].apply(ev)
            stored.append(ev)
        for customer_id, (before, after) in states.items():
            store_state(self.conn, *_touched(before, after))
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
        return _load_dictionary(self.raw, ident)

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
