"""The central server's store: pairing and credentials, ingest, pull, projections.

Ingest is one transaction per batch:

1. The terminal's row is locked (``SELECT ... FOR UPDATE``; SQLite: ``BEGIN IMMEDIATE``), so
   two pushes of the same till serialise.
2. Each event is placed in the till's chain: a slot already holding the same hash is a resend
   (``duplicate``); ``seq == head + 1`` with a linking ``prev_hash`` extends the chain; a seq
   at or behind the head with a different hash (the till was restored from an older backup
   and re-used sequence numbers) opens a new *epoch* of that till's chain — nothing stored is
   overwritten and the event with a re-used seq is quarantined as a conflict; a seq beyond
   ``head + 1`` is refused as a whole batch (``409 sequence_gap`` with the server's head: the
   server was restored, the till resends from there).
3. The by-id store dedups on (merchant, event id): a new id is accepted and folded into the
   balances; the same id with a different hash is refused loudly (``conflict``,
   ``id_reused``) — except a derived-id expiry another till recorded first: its chain slot is
   kept (``superseded``) and the answer is ``duplicate`` carrying the winner's payload, so the
   pushing till books the difference locally (``ledger.replication``).
4. The slots created get merchant-wide ``server_seq`` values from the merchant's counter row,
   ``UPDATE merchants SET last_seq = last_seq + n RETURNING last_seq``, inside the same
   transaction: the row lock is held until commit, so positions follow commit order and a
   reader paging "after N" never skips a position that commits late.
5. Single-use coupons (after that lock, so in commit order): the first ingested sale that
   uses a coupon is recorded in ``coupon_uses``; a later use by another event (two tills
   redeemed it offline) is still accepted, stored, counted and served — the sale happened —
   and recorded as a ``coupon_reused`` conflict naming both events, the tills and the
   customer. Its answer is ``accepted`` with ``reason = coupon_reused`` (also on a resend),
   and the till records the conflict locally.

Cost (PostgreSQL): a batch is a handful of statements whatever its size — look-ups by one
array parameter (only of the ids that can be stored already: ``_store_batch``), event rows
(and the few other chain slots) by ``COPY``, and the balance projection: the batch's total
per (customer, program, unit) added in one upsert that returns the new balances (before
the merchant's lock, so the pushes of a merchant's tills fold at the same time; ``_fold``),
overdrafts worked out in Python from those. The HTTP answer is encoded straight from the
results (``ingest_json``), with no model pass.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import re
import secrets
import sqlite3
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Engine,
    Table,
    any_,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy import bindparam as bp
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from pos_loyalty.config import ConfigError, load_programs_text
from pos_loyalty.domain.events import Kind
from pos_loyalty.domain.ids import expiry_event_id
from pos_loyalty.ledger.codec import GENESIS
from pos_loyalty.ledger.replication import COUPON_REUSED, reconcile_id, reconcile_postings
from sync.protocol import (
    IDENT_PATTERN,
    PROTOCOL_VERSION,
    ChainHead,
    ChainStub,
    CustomerBalance,
    PulledEvent,
    PullResponse,
    PushRequest,
    PushResponse,
    SnapshotPage,
    Status,
    WireEvent,
    cursor_tag,
    make_cursor,
    parse_cursor,
    slot_tag,
)

from . import schema
from .snapshots import ALL, REGION, SnapshotCache, fold_events, page_json, regions

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger("sync.server")
_ADJUSTED = Kind.ACCOUNT_ADJUSTED.value
_CHUNK = 500
MAX_PROGRAM_CONFIG_BYTES = 1024 * 1024
# ``note_round`` writes a till's "last seen" at most this often (seconds) while what it
# reports does not change: every sync round asks for the configuration, and a write per
# round per till would only move a timestamp.
SEEN_EVERY = 60.0


class SyncError(Exception):
    """A refused request: HTTP status, stable code, human message. Nothing was written."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


@dataclass(frozen=True)
class TillAuth:
    terminal_id: str
    merchant_id: str
    store_id: str


# Why a pushed event was quarantined (a ``conflict`` chain slot; answered again on a resend).
QUARANTINED = ("id_reused", "seq_reused_after_restore")
# The answer to a derived-id expiry another till recorded first (also to its resend).
EXPIRY_ELSEWHERE = "expiry_decided_elsewhere"
EXPIRY_ELSEWHERE_MESSAGE = "another till expired this lot first; its amount counts"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def is_derived_expiry(ev: WireEvent) -> bool:
    if ev.kind != Kind.POINTS_EXPIRED.value:
        return False
    try:
        lot = json.loads(ev.payload)["d"]["lot"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(lot, str) and ev.id == expiry_event_id(lot)


_COUPON_USERS = (Kind.SALE_COMMITTED.value, Kind.REFUND_COMMITTED.value)
# What a customer spends, by event kind: the units of the debits an offline till may have
# taken below zero (points redeemed, wallet money paid at the till or paid out), which the
# offline limits bound and the server flags (``overdrafts``).
_SPENDING = {
    Kind.SALE_COMMITTED.value: ("points", "money"),
    Kind.WALLET_PAID_OUT.value: ("money",),
}


def coupon_serials(kind: str, payload: str) -> list[str]:
    """The single-use coupons a sale redeemed, or a full refund withdrew (the reward coupon
    its sale issued, still unused at that till): ``uses`` keys ``coupon:<serial>``."""
    if kind not in _COUPON_USERS or '"coupon:' not in payload:
        return []  # (the substring test keeps ingest from decoding every sale twice)
    try:
        uses = json.loads(payload)["d"].get("uses") or {}
    except (ValueError, KeyError, TypeError, AttributeError):
        return []
    if not isinstance(uses, dict):
        return []
    return sorted(
        key.removeprefix("coupon:")
        for key, count in uses.items()
        if isinstance(key, str) and key.startswith("coupon:") and len(key) <= 71 and count
    )


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _pg_text_array(values: Sequence[str]) -> str:
    """A PostgreSQL ``text[]`` literal (``{"a","b"}``): one string parameter, much cheaper
    to build than adapting a Python list element by element."""
    quoted = []
    for v in values:
        if "\\" in v or '"' in v:
            v = v.replace("\\", "\\\\").replace('"', '\\"')
        quoted.append(v)
    return '{"' + '","'.join(quoted) + '"}' if quoted else "{}"


def make_server_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout = 30000")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = FULL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    # connect_timeout: during an outage a new connection fails in seconds instead of
    # holding a request (and a worker thread) for as long as the network takes to give up.
    return create_engine(
        url,
        pool_size=10,
        max_overflow=20,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 10},
    )


def migrate(engine: Engine) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class ServerDatabaseError(Exception):
    """The server's database cannot be opened: not a database URL, unreachable, refused
    credentials, a file that is not a database (the message names it, password hidden)."""


def shown_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _first_words(exc: BaseException) -> str:
    """A driver's message on one line (psycopg's span several)."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    return " ".join(str(orig).split())


def one_line(exc: BaseException) -> str:
    """A database error for an operator: the driver's class and message on one line."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    return f"{type(orig).__name__}: {_first_words(exc)}"


def database_errors() -> tuple[type[Exception], ...]:
    """The exception classes a database failure can arrive as: SQLAlchemy's wrappers (and
    its pool's timeout, all connections stuck during an outage), and the drivers' own
    (psycopg's COPY path is not wrapped)."""
    classes: tuple[type[Exception], ...] = (DBAPIError, PoolTimeout, sqlite3.Error)
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        classes += (psycopg.Error,)
    return classes


# SQLite's result codes for a database that cannot be used right now (locked by another
# process, the disk failing or full, the file damaged or gone), as opposed to a statement
# that is wrong ("no such table", a syntax error: a bug, answered 500).
_SQLITE_TROUBLE = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_IOERR",
    "SQLITE_FULL",
    "SQLITE_CORRUPT",
    "SQLITE_NOTADB",
    "SQLITE_CANTOPEN",
    "SQLITE_READONLY",
    "SQLITE_PROTOCOL",
)


def database_trouble(exc: BaseException) -> str | None:
    """One line saying why the database could not be used, when ``exc`` is the database
    being out of reach rather than a fault in a request or in this code: the connection
    refused, lost or shut down by an administrator, the database dropped, a transaction the
    database gave up on (PostgreSQL's serialization or deadlock failures), all pooled
    connections busy past the pool's timeout, SQLite's locked, I/O, full or damaged file.
    None for anything else (a constraint, a bad statement). psycopg's COPY path raises the
    driver's errors unwrapped, so both forms are looked at."""
    if isinstance(exc, PoolTimeout):
        return "no database connection free: " + str(exc).split(" (Background")[0]
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if isinstance(orig, sqlite3.Error):
        name = getattr(orig, "sqlite_errorname", None) or ""
        return _first_words(exc) if name.startswith(_SQLITE_TROUBLE) else None
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError):
        return _first_words(exc)
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return _first_words(exc)
    return None


def id_problem(what: str, value: str) -> str | None:
    """Why ``value`` cannot be a terminal, merchant, store or region id (None: it can): the
    rule of a till's ``terminal.id`` (``pos_loyalty.config.Ident``)."""
    if re.fullmatch(IDENT_PATTERN.strip("^$"), value):
        return None
    return (
        f"{what} {value!r} is not an id: 1 to 64 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"
    )


def _check_ids(**ids: str | None) -> None:
    for what, value in ids.items():
        problem = None if value is None else id_problem(what, value)
        if problem is not None:
            raise SyncError(422, "invalid_id", problem)


class ServerStore:
    """The server's database (PostgreSQL or SQLite), migrated on open."""

    def __init__(self, url: str) -> None:
        try:
            self._open(url)
        except (ArgumentError, NoSuchModuleError) as exc:
            raise ServerDatabaseError(
                f"{shown_url(url)!r} is not a database URL this server can use ({exc}); "
                "give postgresql+psycopg://USER@HOST:PORT/DB or sqlite:///PATH"
            ) from None
        except DBAPIError as exc:
            raise ServerDatabaseError(
                f"cannot use the database {shown_url(url)}: {_first_words(exc)}"
            ) from None

    def _open(self, url: str) -> None:
        self.url = url
        self.engine = make_server_engine(url)
        self.is_sqlite = url.startswith("sqlite")
        # What a refused row raises: through SQLAlchemy, or from psycopg's COPY (``_insert_rows``
        # writes on the driver's own cursor, which SQLAlchemy does not wrap).
        self._refused_row: tuple[type[Exception], ...] = (IntegrityError,)
        if not self.is_sqlite:
            import psycopg

            self._refused_row = (IntegrityError, psycopg.IntegrityError)
        migrate(self.engine)
        self.snapshots = SnapshotCache()  # bootstrap snapshots, per process (``snapshots``)
        # terminal -> (what it reported, monotonic time written): ``note_round``'s throttle.
        self._noted: dict[str, tuple[tuple[int, int | None, str | None], float]] = {}
        self._noted_lock = threading.Lock()

    def close(self) -> None:
        self.engine.dispose()

    def database_problem(self) -> str | None:
        """None when the database answers a read of the server's own tables, else one line
        saying why not (for ``/v1/sync/health``)."""
        try:
            # On the driver's connection, outside SQLAlchemy's transaction: on SQLite that
            # would be ``BEGIN IMMEDIATE`` (``make_server_engine``), queueing the probe
            # behind every push for the write lock.
            pooled = self.engine.raw_connection()
            try:
                cursor = pooled.cursor()
                cursor.execute("SELECT id, name, last_seq FROM merchants LIMIT 1")
                cursor.fetchall()
                cursor.close()
            finally:
                pooled.close()
        except Exception as exc:  # noqa: BLE001 - any failure is the answer, not a crash
            return database_trouble(exc) or f"{type(exc).__name__}: {_first_words(exc)}"
        return None

    # -- merchants, stores, terminals, tokens ----------------------------------------------
    def ensure_terminal(
        self, terminal_id: str, merchant_id: str, store_id: str, region: str | None = None
    ) -> None:
        """Create the merchant, store and terminal if missing (a terminal never moves).
        ``region``: a new store's region (an existing store's is set by ``set_region``).
        Ids follow a till's ``terminal.id`` rule (else 422 ``invalid_id``, nothing written)."""
        _check_ids(terminal=terminal_id, merchant=merchant_id, store=store_id, region=region)
        with self.engine.begin() as conn:
            if (
                conn.execute(
                    select(schema.merchants.c.id).where(schema.merchants.c.id == merchant_id)
                ).first()
                is None
            ):
                conn.execute(
                    insert(schema.merchants).values(id=merchant_id, name=merchant_id, last_seq=0)
                )
            store = conn.execute(
                select(schema.stores).where(schema.stores.c.id == store_id)
            ).first()
            if store is None:
                conn.execute(
                    insert(schema.stores).values(
                        id=store_id, merchant_id=merchant_id, region=region
                    )
                )
            elif store.merchant_id != merchant_id:
                raise SyncError(409, "store_of_other_merchant", f"store {store_id} is not yours")
            term = conn.execute(
                select(schema.terminals).where(schema.terminals.c.id == terminal_id)
            ).first()
            if term is None:
                conn.execute(
                    insert(schema.terminals).values(
                        id=terminal_id,
                        merchant_id=merchant_id,
                        store_id=store_id,
                        status="active",
                        epoch=1,
                        head_seq=0,
                        head_hash=GENESIS,
                        created_at=now_iso(),
                    )
                )
            elif term.merchant_id != merchant_id or term.store_id != store_id:
                raise SyncError(
                    409,
                    "terminal_exists",
                    f"terminal {terminal_id} belongs to {term.merchant_id}/{term.store_id}",
                )

    def set_region(
        self, store_id: str, region: str | None, merchant_id: str | None = None
    ) -> str | None:
        """Set (or, with None, clear) a store's region, for its region-only tills
        (``[sync] region_only``); returns the region it had. ``merchant_id``: refuse a store
        of another merchant. 404 ``unknown_store`` when there is no such store."""
        _check_ids(store=store_id, region=region)
        with self.engine.begin() as conn:
            row = conn.execute(
                select(schema.stores).where(schema.stores.c.id == store_id).with_for_update()
            ).first()
            if row is None:
                raise SyncError(404, "unknown_store", f"there is no store {store_id}")
            if merchant_id is not None and row.merchant_id != merchant_id:
                raise SyncError(
                    409,
                    "store_of_other_merchant",
                    f"store {store_id} belongs to merchant {row.merchant_id}, not {merchant_id}",
                )
            conn.execute(
                update(schema.stores).where(schema.stores.c.id == store_id).values(region=region)
            )
        return None if row.region is None else str(row.region)

    def create_pairing_token(
        self, terminal_id: str, merchant_id: str = "default", store_id: str = "default"
    ) -> str:
        """A one-time pairing secret for ``terminal_id``; only its hash is stored."""
        self.ensure_terminal(terminal_id, merchant_id, store_id)
        secret = "pair_" + secrets.token_urlsafe(24)
        with self.engine.begin() as conn:
            term = conn.execute(
                select(schema.terminals.c.status).where(schema.terminals.c.id == terminal_id)
            ).one()
            if term.status != "active":
                raise SyncError(403, "terminal_revoked", f"terminal {terminal_id} is revoked")
            conn.execute(
                insert(schema.tokens).values(
                    token_hash=token_hash(secret),
                    kind="pairing",
                    terminal_id=terminal_id,
                    created_at=now_iso(),
                )
            )
        return secret

    def pair(self, secret: str, terminal_id: str | None = None) -> tuple[TillAuth, str]:
        """Exchange a pairing secret (once) for the till's bearer credential.

        ``terminal_id``: the id the till has (its ``terminal.id``); a token made for another
        terminal is refused (409 ``terminal_mismatch``) before it is used, so the till can
        fix its configuration and pair with the same token. (A till of an older release
        sends none and checks the answer itself.) A successful pairing revokes the
        terminal's earlier till credentials: only the newest one works."""
        digest = token_hash(secret)
        with self.engine.begin() as conn:
            row = conn.execute(
                select(schema.tokens).where(schema.tokens.c.token_hash == digest).with_for_update()
            ).first()
            if row is None or row.kind != "pairing" or row.revoked_at is not None:
                raise SyncError(401, "invalid_token", "That pairing token is not valid.")
            if row.used_at is not None:
                raise SyncError(401, "token_used", "That pairing token was already used.")
            if terminal_id is not None and terminal_id != row.terminal_id:
                raise SyncError(
                    409,
                    "terminal_mismatch",
                    f"That pairing token is for terminal {row.terminal_id}, but this till is "
                    f"{terminal_id}: set terminal.id = {row.terminal_id!r} in the till's "
                    "configuration (or create a token for this till); the token was not used.",
                )
            auth = self._terminal_auth(conn, row.terminal_id)
            conn.execute(
                update(schema.tokens)
                .where(schema.tokens.c.token_hash == digest)
                .values(used_at=now_iso())
            )
            # Pairing again replaces the till's credential (a lost or leaked one, a till
            # rebuilt): the earlier ones stop working; the terminal stays active.
            conn.execute(
                update(schema.tokens)
                .where(
                    schema.tokens.c.terminal_id == row.terminal_id,
                    schema.tokens.c.kind == "till",
                    schema.tokens.c.revoked_at.is_(None),
                )
                .values(revoked_at=now_iso())
            )
            credential = "till_" + secrets.token_urlsafe(32)
            conn.execute(
                insert(schema.tokens).values(
                    token_hash=token_hash(credential),
                    kind="till",
                    terminal_id=row.terminal_id,
                    created_at=now_iso(),
                )
            )
        return auth, credential

    def _terminal_auth(self, conn: Connection, terminal_id: str) -> TillAuth:
        term = conn.execute(
            select(schema.terminals).where(schema.terminals.c.id == terminal_id)
        ).one()
        if term.status != "active":
            raise SyncError(403, "terminal_revoked", f"Till {terminal_id} has been revoked.")
        return TillAuth(term.id, term.merchant_id, term.store_id)

    def authenticate(self, credential: str) -> TillAuth:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(schema.tokens).where(schema.tokens.c.token_hash == token_hash(credential))
            ).first()
            if row is None or row.kind != "till":
                raise SyncError(401, "invalid_credentials", "Unknown till credentials.")
            auth = self._terminal_auth(conn, row.terminal_id)  # 403 for a revoked till
            if row.revoked_at is not None:
                # The till is active: this credential was replaced by a later pairing.
                raise SyncError(
                    401,
                    "credentials_replaced",
                    "These till credentials were replaced when the till was paired again.",
                )
            conn.rollback()
        return auth

    def revoke(self, terminal_id: str) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(
                update(schema.terminals)
                .where(schema.terminals.c.id == terminal_id)
                .values(status="revoked")
            ).rowcount
            conn.execute(
                update(schema.tokens)
                .where(schema.tokens.c.terminal_id == terminal_id)
                .values(revoked_at=now_iso())
            )
        return bool(done)

    def note_round(
        self, auth: TillAuth, running: int, refused: int | None = None, problem: str | None = None
    ) -> None:
        """Record what a till reported at its sync round's configuration check: the program
        configuration version it runs, and a newer one it refused (with why). Also its
        "last seen" time, written when the report changes or ``SEEN_EVERY`` seconds after
        the last write (a push writes it too)."""
        report = (running, refused or None, (problem or "")[:300] or None)
        now = time.monotonic()
        with self._noted_lock:
            last = self._noted.get(auth.terminal_id)
            if last is not None and last[0] == report and now - last[1] < SEEN_EVERY:
                return
            self._noted[auth.terminal_id] = (report, now)
        with self.engine.begin() as conn:
            conn.execute(
                update(schema.terminals)
                .where(schema.terminals.c.id == auth.terminal_id)
                .values(
                    last_seen_at=now_iso(),
                    programs_version=report[0],
                    programs_refused=report[1],
                    programs_problem=report[2],
                )
            )

    def terminals(self, merchant_id: str | None = None) -> list[dict[str, Any]]:
        """Every till with its status, what the server holds of its chain, when it was last
        heard from and its program configuration version next to the merchant's current
        one (``programs_current``; 0: none published)."""
        t, p = schema.terminals, schema.programs
        query = (
            select(
                t.c.id,
                t.c.merchant_id,
                t.c.store_id,
                t.c.status,
                t.c.epoch,
                t.c.head_seq,
                t.c.created_at,
                t.c.last_seen_at,
                t.c.programs_version,
                t.c.programs_refused,
                t.c.programs_problem,
                func.coalesce(p.c.version, 0).label("programs_current"),
            )
            .select_from(t.outerjoin(p, p.c.merchant_id == t.c.merchant_id))
            .order_by(t.c.merchant_id, t.c.store_id, t.c.id)
        )
        if merchant_id is not None:
            query = query.where(t.c.merchant_id == merchant_id)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    # -- bulk helpers: one statement per batch on PostgreSQL ------------------------------
    def _chunked(self, items: Sequence[Any]) -> Iterator[Sequence[Any]]:
        """SQLite: IN lists of at most ``_CHUNK``; PostgreSQL: one array parameter."""
        return _chunks(items, _CHUNK if self.is_sqlite else max(1, len(items)))

    def _among(self, col: Column[Any], values: Sequence[Any]) -> ColumnElement[bool]:
        """``col IN (values)``; on PostgreSQL ``col = ANY(:array)`` (one bind parameter)."""
        if self.is_sqlite:
            return col.in_(values)
        return col == any_(bindparam(None, list(values), type_=ARRAY(col.type)))

    def _insert_rows(self, conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` (same keys each): PostgreSQL ``COPY ... FROM STDIN`` (one stream,
        rows formatted by psycopg's C dumpers: several times cheaper than an INSERT of the
        same rows); SQLite an executemany."""
        if not rows:
            return
        if self.is_sqlite:
            conn.execute(insert(table), rows)
            return
        names = [c.name for c in table.columns if c.name in rows[0]]
        get = itemgetter(*names)
        raw = conn.connection.driver_connection
        assert raw is not None
        quoted = ", ".join(f'"{n}"' for n in names)
        with raw.cursor() as cur, cur.copy(f'COPY "{table.name}" ({quoted}) FROM STDIN') as cp:
            if len(names) == 1:
                for r in rows:
                    cp.write_row((get(r),))
            else:
                for r in rows:
                    cp.write_row(get(r))

    # -- ingest ----------------------------------------------------------------------------
    def ingest(self, auth: TillAuth, request: PushRequest) -> PushResponse:
        """Store a pushed batch (one transaction); the answer, validated."""
        return PushResponse.model_validate(self._ingest(auth, request))

    def ingest_json(self, auth: TillAuth, request: PushRequest) -> bytes:
        """As :meth:`ingest`, the answer as the JSON bytes ``PushResponse`` serialises to
        (every field present), encoded directly: the HTTP path needs no model of it."""
        # orjson: the same compact UTF-8 JSON as json.dumps(ensure_ascii=False) for these
        # values (str, int, None; no floats), ~10x faster for a 1,000-event answer.
        return orjson.dumps(self._ingest(auth, request))

    def _ingest(self, auth: TillAuth, request: PushRequest) -> dict[str, Any]:
        if request.protocol != PROTOCOL_VERSION:
            raise SyncError(426, "protocol_unsupported", f"protocol {request.protocol} unknown")
        t = auth.terminal_id
        if request.terminal_id != t or any(ev.terminal_id != t for ev in request.events):
            raise SyncError(
                403, "wrong_terminal", f"These credentials may push only till {t}'s events."
            )
        evs = request.events
        for before, after in zip(evs, evs[1:], strict=False):
            if after.seq != before.seq + 1 or after.prev_hash != before.hash:
                raise SyncError(
                    422,
                    "broken_batch",
                    f"event seq {after.seq} does not follow seq {before.seq} in the batch.",
                )
        parsed: dict[int, Any] = {}  # seq -> decoded payload (decoded once per event)
        for ev in evs:
            payload = ev.checked_payload()
            if payload is None:
                raise SyncError(
                    422,
                    "bad_hash",
                    f"event {ev.id} (seq {ev.seq}) does not match its hash or does not decode.",
                )
            parsed[ev.seq] = payload
        received = now_iso()
        try:
            return self._store_batch(auth, evs, parsed, received, look_up_all=False)
        except self._refused_row:
            # An event this batch brought as new has an id the merchant holds already (a
            # till restored from a backup, a buggy or hostile one, an expiry another till
            # stored a moment ago): nothing was written; again, looking every id up first.
            return self._store_batch(auth, evs, parsed, received, look_up_all=True)

    def _store_batch(
        self,
        auth: TillAuth,
        evs: Sequence[WireEvent],
        parsed: dict[int, Any],
        received: str,
        *,
        look_up_all: bool,
    ) -> dict[str, Any]:
        """Store a checked batch in one transaction; the answer as a ``PushResponse`` dict.

        Which ids are looked up in the by-id store first: with ``look_up_all``, every one;
        else only those that can be there in the normal run of things (a resend or a re-used
        seq, at or behind the till's head; an expiry, whose id another till derives from the
        same lot). A new event of any other kind has a fresh UUIDv7: if its id is stored
        after all, the events table's primary key refuses the row, the transaction rolls
        back (IntegrityError) and the caller runs this again with ``look_up_all``. That
        saves a look-up per event in every ordinary batch (about 8 ms per 1,000 events on
        PostgreSQL)."""
        t, m = auth.terminal_id, auth.merchant_id
        with self.engine.begin() as conn:
            term = conn.execute(
                select(schema.terminals).where(schema.terminals.c.id == t).with_for_update()
            ).one()
            if term.status != "active":
                raise SyncError(403, "terminal_revoked", f"Till {t} has been revoked.")
            epoch, head_seq, head_hash = term.epoch, term.head_seq, bytes(term.head_hash)
            seqs = [ev.seq for ev in evs]
            ids = [ev.id for ev in evs]
            # The batch is contiguous (checked above): its seqs are one range.
            low, high = seqs[0], seqs[-1]
            # The hashes the till's chain slots in this range hold already (any epoch): its
            # accepted slots are ``events`` rows, the others ``chain`` rows (s0005).
            slots: dict[int, dict[bytes, str]] = defaultdict(dict)  # seq -> {hash: status}
            taken_seqs: set[int] = set()  # seqs of the till's events stored (any epoch)
            for row in conn.execute(
                select(schema.events.c.seq, schema.events.c.hash).where(
                    schema.events.c.terminal_id == t, schema.events.c.seq.between(low, high)
                )
            ):
                slots[row.seq][bytes(row.hash)] = "accepted"
                taken_seqs.add(row.seq)
            for other in conn.execute(
                select(schema.chain.c.seq, schema.chain.c.hash, schema.chain.c.status).where(
                    schema.chain.c.terminal_id == t, schema.chain.c.seq.between(low, high)
                )
            ):
                slots[other.seq][bytes(other.hash)] = other.status
            if not look_up_all:
                expired = Kind.POINTS_EXPIRED.value
                ids = [ev.id for ev in evs if ev.seq <= head_seq or ev.kind == expired]
            known: dict[str, Any] = {row.id: row for row in self._known_events(conn, m, ids)}
            results: list[dict[str, Any]] = []  # built once, as EventResult, at the end
            new_chain: list[dict[str, Any]] = []
            new_events: list[dict[str, Any]] = []
            conflicts: list[dict[str, Any]] = []
            superseded_here: dict[str, str] = {}  # expiry id -> own payload, this batch

            def conflict(ev: WireEvent, reason: str, message: str) -> None:
                conflicts.append(
                    {
                        "merchant_id": m,
                        "terminal_id": t,
                        "event_id": ev.id,
                        "seq": ev.seq,
                        "reason": reason,
                        "message": message,
                        "recorded_at": received,
                        "customer_id": ev.customer_id,
                        "other_event_id": None,
                        "other_terminal_id": None,
                    }
                )

            for ev in evs:
                digest = bytes.fromhex(ev.hash)
                held = slots.get(ev.seq, {}).get(digest)
                if held is not None:
                    resent: dict[str, Any] = {
                        "id": ev.id,
                        "seq": ev.seq,
                        "status": Status.DUPLICATE,
                    }
                    winner = known.get(ev.id) if held == "superseded" else None
                    if winner is not None:
                        # The first answer was lost: answer as then, so that the till books
                        # the difference (``Replica.record_answers``; idempotent there).
                        resent.update(
                            reason=EXPIRY_ELSEWHERE,
                            message=EXPIRY_ELSEWHERE_MESSAGE,
                            winner_payload=winner.payload,
                        )
                    elif held == "conflict":
                        resent["quarantined"] = True  # answered as then: _answer_quarantined
                    elif held == "accepted":
                        self._repair_if_damaged(conn, m, ev, known.get(ev.id), conflict)
                    results.append(resent)
                    continue
                prev = bytes.fromhex(ev.prev_hash)
                if ev.seq > head_seq + 1:
                    raise SyncError(
                        409,
                        "sequence_gap",
                        f"the server holds till {t}'s chain up to seq {head_seq}; "
                        f"seq {ev.seq} does not follow it. Resend from seq {head_seq + 1}.",
                        head=ChainHead(
                            epoch=epoch, seq=head_seq, hash=head_hash.hex()
                        ).model_dump(),
                    )
                if ev.seq <= head_seq or prev != head_hash:
                    epoch += 1
                    conflict(
                        ev,
                        "new_epoch",
                        f"till {t} sent seq {ev.seq} chained differently from what the server "
                        f"acknowledged (head seq {head_seq}): restored from an older state? "
                        f"Its chain continues as epoch {epoch}; nothing was overwritten.",
                    )
                head_seq, head_hash = ev.seq, digest
                slot = {
                    "terminal_id": t,
                    "epoch": epoch,
                    "seq": ev.seq,
                    "merchant_id": m,
                    "event_id": ev.id,
                    "prev_hash": prev,
                    "hash": digest,
                    "status": "accepted",
                    "body": None,
                }
                prior = known.get(ev.id)
                if prior is not None:
                    if bytes(prior.hash) != digest and is_derived_expiry(ev):
                        slot.update(status="superseded", body=ev.model_dump_json())
                        superseded_here[ev.id] = ev.payload
                        results.append(
                            {
                                "id": ev.id,
                                "seq": ev.seq,
                                "status": Status.DUPLICATE,
                                "reason": EXPIRY_ELSEWHERE,
                                "message": EXPIRY_ELSEWHERE_MESSAGE,
                                "winner_payload": prior.payload,
                            }
                        )
                    else:
                        slot.update(status="conflict", body=ev.model_dump_json())
                        message = (
                            f"event id {ev.id} is already stored with different content; "
                            "refused (the till may have been restored from a backup)."
                        )
                        conflict(ev, "id_reused", message)
                        results.append(
                            {
                                "id": ev.id,
                                "seq": ev.seq,
                                "status": Status.CONFLICT,
                                "reason": "id_reused",
                                "message": message,
                            }
                        )
                elif (
                    ev.kind == _ADJUSTED
                    and type(data := parsed[ev.seq]["d"]) is dict
                    and "reconciles" in data  # (a cheap test first: most adjustments are not)
                    and self._is_reconciliation(conn, t, ev, superseded_here, known, parsed[ev.seq])
                ):
                    slot.update(status="local_only", body=ev.model_dump_json())
                    results.append(
                        {
                            "id": ev.id,
                            "seq": ev.seq,
                            "status": Status.ACCEPTED,
                            "reason": "local_only",
                        }
                    )
                elif ev.seq in taken_seqs:
                    slot.update(status="conflict", body=ev.model_dump_json())
                    message = (
                        f"till {t} re-used seq {ev.seq} after a restore; the event is kept "
                        "in quarantine for an operator and not counted."
                    )
                    conflict(ev, "seq_reused_after_restore", message)
                    results.append(
                        {
                            "id": ev.id,
                            "seq": ev.seq,
                            "status": Status.CONFLICT,
                            "reason": "seq_reused_after_restore",
                            "message": message,
                        }
                    )
                else:
                    new_events.append(
                        {
                            "merchant_id": m,
                            "id": ev.id,
                            "terminal_id": t,
                            "epoch": epoch,
                            "seq": ev.seq,
                            "kind": ev.kind,
                            "at": ev.at,
                            "customer_id": ev.customer_id,
                            "key": ev.key,
                            "payload": ev.payload,
                            "prev_hash": prev,
                            "hash": digest,
                            "received_at": received,
                        }
                    )
                    known[ev.id] = _Known(ev.id, digest, ev.payload)
                    results.append({"id": ev.id, "seq": ev.seq, "status": Status.ACCEPTED})
                new_chain.append(slot)
            overdrawn: list[dict[str, Any]] = []
            if new_events:
                # Before the merchant row lock below: the fold locks only the balance rows it
                # changes (in key order), so pushes of the merchant's other tills fold at the
                # same time unless they share customers; the lock is held from there to the
                # commit, and that stretch is what the merchant's pushes take in turn.
                overdrawn = self._fold(conn, m, new_events, received, parsed)
            if new_chain:
                last = conn.execute(
                    update(schema.merchants)
                    .where(schema.merchants.c.id == m)
                    .values(last_seq=schema.merchants.c.last_seq + len(new_chain))
                    .returning(schema.merchants.c.last_seq)
                ).scalar_one()
                first = last - len(new_chain) + 1
                by_id: dict[str, int] = {}  # a new event's position: its accepted slot's
                for i, slot in enumerate(new_chain):
                    slot["server_seq"] = first + i
                    if slot["status"] == "accepted":
                        by_id[slot["event_id"]] = first + i
                for new in new_events:
                    new["server_seq"] = by_id[new["id"]]
                # An accepted slot is its ``events`` row; ``chain`` holds the others.
                self._insert_rows(
                    conn, schema.chain, [s for s in new_chain if s["status"] != "accepted"]
                )
                reused: dict[str, str] = {}
                if new_events:
                    self._insert_rows(conn, schema.events, new_events)
                    # After the merchant row lock above: coupon uses of concurrent pushes of
                    # the merchant are decided in commit order ("first ingested wins").
                    reused = self._coupon_uses(conn, m, new_events, received, conflicts)
                    # Under the lock too: ``server overdrafts`` (by id) lists in commit order.
                    self._insert_rows(conn, schema.overdrafts, overdrawn)
                for r in results:
                    if r["status"] is Status.ACCEPTED and r.get("reason") is None:
                        r["server_seq"] = by_id.get(r["id"])
                        if r["id"] in reused:
                            r["reason"], r["message"] = COUPON_REUSED, reused[r["id"]]
                conn.execute(
                    update(schema.terminals)
                    .where(schema.terminals.c.id == t)
                    .values(
                        epoch=epoch, head_seq=head_seq, head_hash=head_hash, last_seen_at=received
                    )
                )
            self._insert_rows(conn, schema.conflicts, conflicts)
            self._flag_resent(conn, m, results)
            self._answer_quarantined(conn, m, t, results)
        return {
            "protocol": PROTOCOL_VERSION,
            "results": [
                {
                    "id": r["id"],
                    "seq": r["seq"],
                    "status": r["status"].value,
                    "reason": r.get("reason"),
                    "message": r.get("message"),
                    "server_seq": r.get("server_seq"),
                    "winner_payload": r.get("winner_payload"),
                }
                for r in results
            ],
            "head": {"epoch": epoch, "seq": head_seq, "hash": head_hash.hex()},
        }

    def _repair_if_damaged(
        self,
        conn: Connection,
        merchant_id: str,
        ev: WireEvent,
        stored: Any,
        conflict: Callable[[WireEvent, str, str], None],
    ) -> None:
        """A resent event the server holds with the same id and hash: where the stored copy
        fails its own hash check (damaged on the server's disk, or by hand), the tills
        refuse it when they pull (and ``server verify`` names it). The resend has
        passed the hash check, so it is the event as its till recorded it: stored in place
        of the damaged copy (the balances were folded from the checked content at first
        ingest and stay), and recorded for the operator (``server conflicts``). This is how
        ``server verify``'s findings are mended: ``pos-loyalty sync --resend-from SEQ`` on
        the till that recorded the event."""
        if stored is None:
            return
        if WireEvent.from_row(stored).checked_payload() is not None:
            return  # the stored copy is sound: a resend written differently changes nothing
        fields = {
            "kind": ev.kind,
            "at": ev.at,
            "customer_id": ev.customer_id,
            "key": ev.key,
            "payload": ev.payload,
            "prev_hash": bytes.fromhex(ev.prev_hash),
        }
        e = schema.events
        conn.execute(
            update(e).where(e.c.merchant_id == merchant_id, e.c.id == ev.id).values(**fields)
        )
        conflict(
            ev,
            "repaired",
            f"the server's copy of event {ev.id} did not match its hash; replaced by the copy "
            "its till sent again",
        )
        log.warning("event %s (till %s, seq %d) repaired", ev.id, ev.terminal_id, ev.seq)

    def _known_events(self, conn: Connection, merchant_id: str, ids: list[str]) -> list[Any]:
        """The rows (the columns ``WireEvent.from_row`` reads) of the events among ``ids``
        the merchant already holds."""
        e = schema.events
        if self.is_sqlite:
            found: list[Any] = []
            for chunk in _chunks(ids):
                found.extend(
                    conn.execute(
                        select(
                            e.c.id, e.c.terminal_id, e.c.seq, e.c.kind, e.c.at,
                            e.c.customer_id, e.c.key, e.c.payload, e.c.prev_hash, e.c.hash,
                        ).where(e.c.merchant_id == merchant_id, e.c.id.in_(chunk))
                    )
                )  # fmt: skip
            return found
        return list(
            conn.exec_driver_sql(
                "SELECT id, terminal_id, seq, kind, at, customer_id, key, payload, prev_hash,"
                " hash FROM events"
                " WHERE merchant_id = %(m)s AND id = ANY(%(ids)s::text[])",
                {"m": merchant_id, "ids": _pg_text_array(ids)},
            ).all()
        )

    def _coupon_uses(
        self,
        conn: Connection,
        merchant_id: str,
        rows: list[dict[str, Any]],
        at: str,
        conflicts: list[dict[str, Any]],
    ) -> dict[str, str]:
        """Record the first ingested use of each single-use coupon; a later use (another
        till redeemed the same coupon while offline) is kept and counted, and recorded as a
        ``coupon_reused`` conflict naming both events. Returns {event id: message}."""
        uses: list[tuple[dict[str, Any], str]] = [
            (r, serial) for r in rows for serial in coupon_serials(r["kind"], r["payload"])
        ]
        if not uses:
            return {}
        cu = schema.coupon_uses
        first: dict[str, Any] = {}
        serials = sorted({serial for _, serial in uses})
        for chunk in self._chunked(serials):
            for row in conn.execute(
                select(cu).where(cu.c.merchant_id == merchant_id, self._among(cu.c.serial, chunk))
            ):
                first[row.serial] = row._mapping
        new_uses: list[dict[str, Any]] = []
        reused: dict[str, str] = {}
        for r, serial in uses:
            winner = first.get(serial)
            if winner is None:
                use = {
                    "merchant_id": merchant_id,
                    "serial": serial,
                    "event_id": r["id"],
                    "terminal_id": r["terminal_id"],
                    "customer_id": r["customer_id"],
                    "used_at": at,
                }
                first[serial] = use
                new_uses.append(use)
                continue
            if winner["event_id"] == r["id"]:
                continue
            this = (
                "this withdrawal by a refund"
                if r["kind"] == Kind.REFUND_COMMITTED.value
                else "this redemption"
            )
            message = (
                f"coupon {serial} was already used by event {winner['event_id']} at till "
                f"{winner['terminal_id']}; {this} (event {r['id']} at till "
                f"{r['terminal_id']}, customer {r['customer_id']}) is kept and counted, "
                "for an operator to settle."
            )
            reused.setdefault(r["id"], message)
            conflicts.append(
                {
                    "merchant_id": merchant_id,
                    "terminal_id": r["terminal_id"],
                    "event_id": r["id"],
                    "seq": r["seq"],
                    "reason": COUPON_REUSED,
                    "message": message,
                    "recorded_at": at,
                    "customer_id": r["customer_id"],
                    "other_event_id": winner["event_id"],
                    "other_terminal_id": winner["terminal_id"],
                }
            )
        self._insert_rows(conn, cu, new_uses)
        return reused

    def _flag_resent(
        self, conn: Connection, merchant_id: str, results: list[dict[str, Any]]
    ) -> None:
        """A resend of an event flagged ``coupon_reused`` (its first answer was lost) is
        answered with the flag again, so the till records the conflict exactly as if the
        first answer had arrived. (Updates ``results`` in place.)"""
        dups = [
            r["id"]
            for r in results
            if r["status"] is Status.DUPLICATE
            and r.get("reason") is None
            and not r.get("quarantined")
        ]
        if not dups:
            return
        c = schema.conflicts
        flagged: dict[str, str] = {}
        for chunk in self._chunked(dups):
            for row in conn.execute(
                select(c.c.event_id, c.c.message).where(
                    c.c.merchant_id == merchant_id,
                    self._among(c.c.event_id, chunk),
                    c.c.reason == COUPON_REUSED,
                )
            ):
                flagged.setdefault(row.event_id, row.message)
        for r in results:
            if r["status"] is Status.DUPLICATE and r["id"] in flagged:
                r["reason"], r["message"] = COUPON_REUSED, flagged[r["id"]]

    def _answer_quarantined(
        self, conn: Connection, merchant_id: str, terminal_id: str, results: list[dict[str, Any]]
    ) -> None:
        """A resend of an event the server quarantined (``id_reused``,
        ``seq_reused_after_restore``: its first answer was lost) is answered ``conflict`` with
        the same reason and message again, so the till records it as if the first answer had
        arrived. (Updates ``results`` in place.)"""
        resent = [r for r in results if r.get("quarantined")]
        if not resent:
            return
        c = schema.conflicts
        why: dict[tuple[str, int], tuple[str, str]] = {}
        for chunk in self._chunked(sorted({r["id"] for r in resent})):
            for row in conn.execute(
                select(c.c.event_id, c.c.seq, c.c.reason, c.c.message)
                .where(
                    c.c.merchant_id == merchant_id,
                    c.c.terminal_id == terminal_id,
                    self._among(c.c.event_id, chunk),
                    c.c.reason.in_(QUARANTINED),
                )
                .order_by(c.c.id)
            ):
                why.setdefault((row.event_id, int(row.seq)), (row.reason, row.message))
        for r in resent:
            found = why.get((r["id"], r["seq"]))
            if found is not None:
                r["status"], (r["reason"], r["message"]) = Status.CONFLICT, found

    def _is_reconciliation(
        self,
        conn: Connection,
        terminal_id: str,
        ev: WireEvent,
        superseded_here: dict[str, str],
        known: dict[str, Any],
        payload: Any,
    ) -> bool:
        """A local-only event booking a superseded expiry's difference at its till (checked)."""
        if ev.kind != Kind.ACCOUNT_ADJUSTED.value:
            return False
        try:
            expiry_id = payload["d"]["reconciles"]
        except (ValueError, KeyError, TypeError):
            return False
        if not isinstance(expiry_id, str) or ev.id != reconcile_id(expiry_id, terminal_id):
            return False
        own = superseded_here.get(expiry_id)
        if own is None:
            row = conn.execute(
                select(schema.chain.c.body).where(
                    schema.chain.c.terminal_id == terminal_id,
                    schema.chain.c.event_id == expiry_id,
                    schema.chain.c.status == "superseded",
                )
            ).first()
            if row is None:
                return False
            own = WireEvent.model_validate_json(row.body).payload
        winner = known.get(expiry_id)
        if winner is None:
            winner = conn.execute(
                select(schema.events.c.payload).where(
                    schema.events.c.id == expiry_id,
                    schema.events.c.terminal_id != terminal_id,
                )
            ).first()
        if winner is None:
            return False
        wanted = reconcile_postings(own, winner.payload)
        got = [{k: p[k] for k in ("program", "unit", "delta")} for p in payload["p"]]
        return bool(got == wanted)

    def _fold(
        self,
        conn: Connection,
        merchant_id: str,
        rows: list[dict[str, Any]],
        at: str,
        parsed: dict[int, Any],
    ) -> list[dict[str, Any]]:
        """Balances: the sum of postings (order-independent); overdrafts flagged.

        Safe beside concurrent pushes of the same merchant without its row lock: on
        PostgreSQL one upsert adds each touched balance's batch total to its row (``balance
        = balance + total``), locking the rows in key order, so two pushes that share
        customers fold one after the other (the second sees the first's committed balance)
        and never deadlock (every push takes its till's row, then balance rows in key order,
        then the merchant's row). SQLite has one writer at a time: it reads the balances and
        writes the changed ones. Returns the ``overdrafts`` rows of the sales and payouts
        that took a points or wallet balance below zero (the caller writes them).

        One pass over the postings adds up the totals and notes, for each debit a customer
        spent (``_SPENDING``: the only postings that can be flagged), the running total of
        its balance in this batch after it; the balance after that posting is then the
        balance before the batch plus that running total."""
        totals: dict[tuple[str, str, str], int] = {}  # (customer, program, unit) -> delta
        debits: list[tuple[tuple[str, str, str], int, dict[str, Any]]] = []
        for r in rows:
            customer = r["customer_id"]
            if not customer:
                continue
            spends = _SPENDING.get(r["kind"], ())
            for p in parsed[r["seq"]]["p"]:
                key = (customer, p["program"], p["unit"])
                delta = int(p["delta"])
                running = totals.get(key, 0) + delta
                totals[key] = running
                if delta < 0 and key[2] in spends:
                    debits.append((key, running, r))
        if not totals:
            return []
        if self.is_sqlite:
            before = self._balances_of(conn, merchant_id, sorted({k[0] for k in totals}))
        else:
            after = self._add_to_balances(conn, merchant_id, totals, returning=bool(debits))
            before = {key: (after[key][0] - totals[key], after[key][1]) for key, _, _ in debits}
        flagged: list[dict[str, Any]] = []
        raised: set[tuple[str, str, str]] = set()  # keys flagged by this batch
        for key, running, r in debits:
            value = before.get(key, (0, False))[0] + running
            if value < 0:
                raised.add(key)
                flagged.append(
                    {
                        "merchant_id": merchant_id,
                        "customer_id": key[0],
                        "program": key[1],
                        "event_id": r["id"],
                        "terminal_id": r["terminal_id"],
                        "balance_after": value,
                        "flagged_at": at,
                    }
                )
        b = schema.balances
        where = (
            b.c.merchant_id == merchant_id,
            b.c.customer_id == bp("c"),
            b.c.program == bp("p"),
            b.c.unit == bp("u"),
        )
        if self.is_sqlite:
            new_rows: list[dict[str, Any]] = []
            updates: list[dict[str, Any]] = []
            for key, total in totals.items():
                value, flag = before.get(key, (0, False))
                now = (value + total, flag or key in raised)
                if key not in before:
                    c, p_, u = key
                    new_rows.append(
                        {
                            "merchant_id": merchant_id,
                            "customer_id": c,
                            "program": p_,
                            "unit": u,
                            "balance": now[0],
                            "overdraft": now[1],
                        }
                    )
                elif now != (value, flag):
                    updates.append(
                        {"c": key[0], "p": key[1], "u": key[2], "v": now[0], "f": now[1]}
                    )
            self._insert_rows(conn, b, new_rows)
            if updates:
                conn.execute(
                    update(b).where(*where).values(balance=bp("v"), overdraft=bp("f")), updates
                )
        else:
            # The balances are already added up; only a new overdraft flag is left to write.
            newly = [k for k in raised if not before[k][1]]
            if newly:
                conn.execute(
                    update(b).where(*where).values(overdraft=True),
                    [{"c": c, "p": p, "u": u} for c, p, u in newly],
                )
        return flagged

    def _balances_of(
        self, conn: Connection, merchant_id: str, customers: list[str]
    ) -> dict[tuple[str, str, str], tuple[int, bool]]:
        """(balance, overdraft) of every balance row of ``customers`` (SQLite)."""
        b = schema.balances
        found: dict[tuple[str, str, str], tuple[int, bool]] = {}
        for chunk in _chunks(customers):
            for c, p, u, v, f in conn.execute(
                select(b.c.customer_id, b.c.program, b.c.unit, b.c.balance, b.c.overdraft).where(
                    b.c.merchant_id == merchant_id, b.c.customer_id.in_(chunk)
                )
            ):
                found[(c, p, u)] = (v, bool(f))
        return found

    def _add_to_balances(
        self,
        conn: Connection,
        merchant_id: str,
        totals: dict[tuple[str, str, str], int],
        *,
        returning: bool,
    ) -> dict[tuple[str, str, str], tuple[int, bool]]:
        """PostgreSQL: add each total to its balance row (a new row for a new one) in one
        statement, rows in key order; with ``returning``, (balance, overdraft) after, by key
        (else {}: a batch without points debits has nothing to flag). (A balance read
        followed by an update of the changed rows was two statements and needed the
        merchant's lock to be safe.)"""
        keys = sorted(totals)
        result = conn.exec_driver_sql(
            "INSERT INTO balances AS b (merchant_id, customer_id, program, unit, balance,"
            " overdraft) SELECT %(m)s, r.c, r.p, r.u, r.d, false"
            " FROM unnest(%(c)s::text[], %(p)s::text[], %(u)s::text[], %(d)s::bigint[])"
            " AS r(c, p, u, d)"
            " ON CONFLICT (merchant_id, customer_id, program, unit)"
            " DO UPDATE SET balance = b.balance + excluded.balance"
            + (
                " RETURNING b.customer_id, b.program, b.unit, b.balance, b.overdraft"
                if returning
                else ""
            ),
            {
                "m": merchant_id,
                "c": _pg_text_array([k[0] for k in keys]),
                "p": _pg_text_array([k[1] for k in keys]),
                "u": _pg_text_array([k[2] for k in keys]),
                "d": "{" + ",".join(str(totals[k]) for k in keys) + "}",
            },
        )
        if not returning:
            return {}
        return {(c, p, u): (v, bool(f)) for c, p, u, v, f in result}

    # -- reads -----------------------------------------------------------------------------
    @contextmanager
    def _consistent(self) -> Iterator[Connection]:
        """One read transaction seeing one state of the database: REPEATABLE READ on
        PostgreSQL (a snapshot for the whole transaction); SQLite's transaction is one."""
        with self.engine.connect() as conn:
            if not self.is_sqlite:
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    def _till_region(self, conn: Connection, auth: TillAuth, scope: str) -> str | None:
        """The region whose customers a till asking for ``scope`` gets (None: all)."""
        if scope == ALL:
            return None
        if scope != REGION:
            raise SyncError(422, "invalid_request", f"scope must be {ALL!r} or {REGION!r}.")
        region = conn.execute(
            select(schema.stores.c.region).where(schema.stores.c.id == auth.store_id)
        ).scalar_one_or_none()
        if region is None:
            raise SyncError(
                409,
                "no_region",
                f"store {auth.store_id} has no region: a region-only till needs one "
                "(set stores.region), or sync all customers (region_only = false).",
            )
        return str(region)

    def _outside_region(
        self, conn: Connection, m: str, region: str, rows: Sequence[Any]
    ) -> set[str]:
        """Ids of the events in ``rows`` whose customer's home store (the store of the till
        that enrolled them, first enrolment on the server) is not in ``region``. Events
        without a customer, and customers not enrolled on the server, are in every region."""
        e, t, st = schema.events, schema.terminals, schema.stores
        customers = sorted({r.customer_id for r in rows if r.customer_id})
        home: dict[str, str | None] = {}
        for chunk in self._chunked(customers):
            for row in conn.execute(
                select(e.c.customer_id, st.c.region)
                .join(t, t.c.id == e.c.terminal_id)
                .join(st, st.c.id == t.c.store_id)
                .where(
                    e.c.merchant_id == m,
                    e.c.kind == Kind.CUSTOMER_ENROLLED.value,
                    self._among(e.c.customer_id, chunk),
                )
                .order_by(e.c.server_seq)
            ):
                home.setdefault(row.customer_id, row.region)
        return {r.id for r in rows if r.customer_id in home and home[r.customer_id] != region}

    def pull(self, auth: TillAuth, after: str | None, limit: int, scope: str = ALL) -> PullResponse:
        """Slots after ``after`` (other tills' events; stubs for slots not served). With
        ``scope=region`` the events of customers from other regions are stubs too. The
        answer carries the head of the asking till's own chain (``PullResponse.head``).

        The cursor answered names the slot at its position (``slot_tag``). A cursor past
        the merchant's last position, or whose position holds another slot than the one it
        names, is refused with 409 ``cursor_ahead`` (and the server's last position as
        ``cursor``): the server was restored from a backup after the till had pulled
        further, and the positions after the backup's last one are given to new events,
        which a till pulling "after" its old cursor would never see."""
        m = auth.merchant_id
        position = 0
        if after:
            try:
                merchant, position = parse_cursor(after)
            except ValueError:
                raise SyncError(400, "bad_cursor", "That is not a sync cursor.") from None
            if merchant != m:
                raise SyncError(403, "foreign_cursor", "That cursor belongs to another merchant.")
        e, c = schema.events, schema.chain
        with self._consistent() as conn:
            last = conn.execute(
                select(schema.merchants.c.last_seq).where(schema.merchants.c.id == m)
            ).scalar_one()
            tag = cursor_tag(after) if after else None
            if position > last or (
                tag is not None and position > 0 and self._slot_tag(conn, m, position) != tag
            ):
                held = (
                    f"positions only up to {last}"
                    if position > last
                    else f"another slot at position {position}"
                )
                raise SyncError(
                    409,
                    "cursor_ahead",
                    f"the server holds {held} (restored from a backup?): this cursor is from "
                    "another history; pull again from a position both hold (events pulled "
                    "again are skipped).",
                    cursor=make_cursor(m, int(last)),
                )
            own = conn.execute(
                select(
                    schema.terminals.c.epoch,
                    schema.terminals.c.head_seq,
                    schema.terminals.c.head_hash,
                ).where(schema.terminals.c.id == auth.terminal_id)
            ).one()
            # The next ``limit`` slots: accepted ones are ``events`` rows, the others
            # ``chain`` rows (s0005), read in one snapshot (a batch committing between the
            # two reads would otherwise leave a gap behind the cursor), merged by position.
            accepted, others = (
                conn.execute(
                    select(t)
                    .where(t.c.merchant_id == m, t.c.server_seq > position)
                    .order_by(t.c.server_seq)
                    .limit(limit)
                ).all()
                for t in (e, c)
            )
            slots: list[tuple[int, bool, Any]] = list(
                islice(
                    heapq.merge(
                        ((r.server_seq, True, r) for r in accepted),
                        ((r.server_seq, False, r) for r in others),
                        key=itemgetter(0),
                    ),
                    limit,
                )
            )
            served = [
                r for _, is_event, r in slots if is_event and r.terminal_id != auth.terminal_id
            ]
            region = self._till_region(conn, auth, scope)
            outside: set[str] = set()
            if region is not None:
                outside = self._outside_region(conn, m, region, served)
        events: list[PulledEvent] = []
        stubs: list[ChainStub] = []
        for _, is_event, s in slots:
            if s.terminal_id == auth.terminal_id:
                continue
            if is_event and s.id not in outside:
                events.append(PulledEvent(server_seq=s.server_seq, event=WireEvent.from_row(s)))
            else:
                stubs.append(
                    ChainStub(
                        terminal_id=s.terminal_id,
                        seq=s.seq,
                        id=s.id if is_event else s.event_id,
                        prev_hash=bytes(s.prev_hash).hex(),
                        hash=bytes(s.hash).hex(),
                    )
                )
        if slots:
            cursor = make_cursor(m, slots[-1][0], slot_tag(bytes(slots[-1][2].hash)))
        else:
            cursor = after or make_cursor(m, 0)
        return PullResponse(
            events=events,
            stubs=stubs,
            cursor=cursor,
            more=len(slots) == limit,
            head=ChainHead(epoch=own.epoch, seq=own.head_seq, hash=bytes(own.head_hash).hex()),
        )

    @staticmethod
    def _slot_tag(conn: Connection, merchant_id: str, position: int) -> str | None:
        """The tag of the slot at ``position`` (an accepted event or another chain slot)."""
        for t in (schema.events, schema.chain):
            found = conn.execute(
                select(t.c.hash).where(t.c.merchant_id == merchant_id, t.c.server_seq == position)
            ).scalar_one_or_none()
            if found is not None:
                return slot_tag(bytes(found))
        return None

    def bootstrap_page(
        self,
        auth: TillAuth,
        at: str | None,
        after: str | None,
        limit: int,
        scope: str = ALL,
    ) -> bytes:
        """One page of the full snapshot (``BootstrapPage`` as JSON bytes), see
        ``sync.server.snapshots``. Without ``at`` the snapshot is taken at the newest
        position; later pages name it with ``at`` (the first page's ``cursor``)."""
        m = auth.merchant_id
        with self._consistent() as conn:
            last = int(
                conn.execute(
                    select(schema.merchants.c.last_seq).where(schema.merchants.c.id == m)
                ).scalar_one()
            )
            seq = last
            if at:
                try:
                    merchant, seq = parse_cursor(at)
                except ValueError:
                    raise SyncError(400, "bad_cursor", "That is not a sync cursor.") from None
                if merchant != m:
                    raise SyncError(
                        403, "foreign_cursor", "That cursor belongs to another merchant."
                    )
                if seq > last:
                    raise SyncError(
                        409,
                        "snapshot_unavailable",
                        f"the server holds positions only up to {last} (restored from a "
                        "backup?): start the bootstrap again.",
                    )
            region = self._till_region(conn, auth, scope)
            snap = self.snapshots.get(conn, m, seq, fold_events)
            cursor = make_cursor(m, seq)
            view = snap.view(cursor, region, regions(conn, m) if region else {})
        return page_json(snap, view, cursor, scope, after, limit)

    def warm_snapshots(self) -> int:
        """Build every merchant's snapshot at its newest position (the server does this in
        the background when it starts, so the first bootstrap after a restart does not pay
        for the fold of every event). Returns the number of merchants."""
        with self.engine.connect() as conn:
            merchants = [r.id for r in conn.execute(select(schema.merchants.c.id))]
            conn.rollback()
        for m in merchants:
            with self._consistent() as conn:
                last = int(
                    conn.execute(
                        select(schema.merchants.c.last_seq).where(schema.merchants.c.id == m)
                    ).scalar_one()
                )
                self.snapshots.get(conn, m, last, fold_events)
        return len(merchants)

    def keep_snapshots_warm(self, every: float, stop: threading.Event) -> None:
        """``warm_snapshots`` now, then every ``every`` seconds until ``stop`` is set (the
        ``pos-loyalty server`` process runs this in a thread). Each pass folds only the
        events ingested since the last one and persists the fold once it moved
        ``SnapshotCache.save_every`` positions, so neither the next bootstrap nor the first
        one after a restart has a long stretch of events to fold. A pass with nothing new
        costs a query per merchant. A failed pass is logged and the next one tries again
        (a bootstrap builds what it needs on demand anyway)."""
        first = True
        while True:
            started = time.perf_counter()
            try:
                n = self.warm_snapshots()
            except Exception:  # noqa: BLE001 - logged; the next pass (or a bootstrap) retries
                log.exception("building the bootstrap snapshots failed; trying again later")
            else:
                log.log(
                    logging.INFO if first else logging.DEBUG,
                    "bootstrap snapshots of %d merchant(s) up to date in %.2f s",
                    n,
                    time.perf_counter() - started,
                )
                first = False
            if every <= 0 or stop.wait(every):
                return

    def snapshot(self, auth: TillAuth, after: str | None, limit: int) -> SnapshotPage:
        b = schema.balances
        with self._consistent() as conn:
            last = conn.execute(
                select(schema.merchants.c.last_seq).where(schema.merchants.c.id == auth.merchant_id)
            ).scalar_one()
            query = select(b).where(b.c.merchant_id == auth.merchant_id)
            if after:
                query = query.where(b.c.customer_id > after)
            customers = [
                r.customer_id
                for r in conn.execute(
                    select(b.c.customer_id)
                    .distinct()
                    .where(b.c.merchant_id == auth.merchant_id, b.c.customer_id > (after or ""))
                    .order_by(b.c.customer_id)
                    .limit(limit)
                )
            ]
            rows = (
                list(
                    conn.execute(
                        query.where(b.c.customer_id <= customers[-1]).order_by(
                            b.c.customer_id, b.c.program, b.c.unit
                        )
                    )
                )
                if customers
                else []
            )
        return SnapshotPage(
            cursor=make_cursor(auth.merchant_id, last),
            balances=[
                CustomerBalance(
                    customer_id=r.customer_id,
                    program=r.program,
                    unit=r.unit,
                    balance=r.balance,
                    overdraft=bool(r.overdraft),
                )
                for r in rows
            ],
            next_after=customers[-1] if len(customers) == limit else None,
        )

    def balances(self, merchant_id: str) -> dict[tuple[str, str, str], int]:
        b = schema.balances
        with self.engine.connect() as conn:
            return {
                (r.customer_id, r.program, r.unit): int(r.balance)
                for r in conn.execute(select(b).where(b.c.merchant_id == merchant_id))
            }

    def event_ids(self, merchant_id: str) -> list[str]:
        with self.engine.connect() as conn:
            return [
                r.id
                for r in conn.execute(
                    select(schema.events.c.id)
                    .where(schema.events.c.merchant_id == merchant_id)
                    .order_by(schema.events.c.server_seq)
                )
            ]

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(schema.metadata.tables[table])
                ).scalar_one()
            )

    def conflicts(self, merchant_id: str | None = None) -> list[dict[str, Any]]:
        c = schema.conflicts
        query = select(c).order_by(c.c.id)
        if merchant_id is not None:
            query = query.where(c.c.merchant_id == merchant_id)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def overdrafts(self, merchant_id: str | None = None) -> list[dict[str, Any]]:
        o = schema.overdrafts
        query = select(o).order_by(o.c.id)
        if merchant_id is not None:
            query = query.where(o.c.merchant_id == merchant_id)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def program_config(self, merchant_id: str) -> tuple[int, str]:
        """The merchant's program configuration: ``(version, TOML text)``; ``(0, "")`` when
        none was ever set (tills then use the [[programs]] of their own files)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(schema.programs).where(schema.programs.c.merchant_id == merchant_id)
            ).first()
        return (0, "") if row is None else (int(row.version), str(row.config))

    def set_program_config(
        self, merchant_id: str, config: str, *, source: str = "<program configuration>"
    ) -> tuple[int, bool]:
        """Store a new program configuration for the merchant: ``(version, changed)``.

        Checked first with the till's own validation (``load_programs_text``): a bad one
        raises ``SyncError(422, "invalid_program_config")`` naming ``source``, the key and
        the problem, and nothing is stored. Versions only go up (1, 2, ...), assigned under
        the merchant's row lock; the same text as the current version is a no-op that keeps
        the version (``changed`` False), so re-running a deployment does not make every till
        re-apply it. An unknown merchant is refused (``404 unknown_merchant``).
        """
        if len(config.encode("utf-8")) > MAX_PROGRAM_CONFIG_BYTES:
            raise SyncError(
                413,
                "program_config_too_large",
                f"{source}: larger than {MAX_PROGRAM_CONFIG_BYTES // 1024} KiB",
            )
        try:
            load_programs_text(config, source)
        except ConfigError as exc:
            raise SyncError(422, "invalid_program_config", str(exc)) from None
        with self.engine.begin() as conn:
            merchant = conn.execute(
                select(schema.merchants.c.id)
                .where(schema.merchants.c.id == merchant_id)
                .with_for_update()
            ).first()
            if merchant is None:
                raise SyncError(
                    404,
                    "unknown_merchant",
                    f"unknown merchant {merchant_id!r}: no till was ever registered for it "
                    f"(`server token create --merchant {merchant_id} ...` registers one)",
                )
            row = conn.execute(
                select(schema.programs)
                .where(schema.programs.c.merchant_id == merchant_id)
                .with_for_update()
            ).first()
            if row is None:
                conn.execute(
                    insert(schema.programs).values(
                        merchant_id=merchant_id, version=1, config=config
                    )
                )
                return 1, True
            if str(row.config) == config:
                return int(row.version), False
            version = int(row.version) + 1
            conn.execute(
                update(schema.programs)
                .where(schema.programs.c.merchant_id == merchant_id)
                .values(version=version, config=config)
            )
            return version, True


class _Known(NamedTuple):  # (a tuple: made once per accepted event, cheaply)
    id: str
    hash: bytes
    payload: str
