"""The ledger's tables (SQLAlchemy Core). Alembic migrations create them; this mirrors head.

``events`` is append-only and the source of truth. Everything else is a projection, updated
in the same transaction as the append and rebuildable from ``events`` (``verify``), except
``receipts.response``: the first answer given for a receipt id, kept exactly (compressed,
``codec``) so a retried commit answers exactly the same. ``codec_dicts`` is part of the
stored format of ``events.payload`` and ``receipts.response`` (0005_compact).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator, UserDefinedType

from .codec import at_key, at_text, id_key, id_text, kind_key, kind_text

metadata = MetaData()


class Stored(UserDefinedType[Any]):
    """A column holding a ``codec`` stored form: bytes, an integer or a text, by value (BLOB
    affinity: SQLite keeps what it is given). Read as is (``LargeBinary`` would turn every
    value into bytes)."""

    cache_ok = True

    def get_col_spec(self, **_kw: Any) -> str:
        return "BLOB"


class EventId(TypeDecorator[str]):
    """An id as ``codec.id_key`` stores it (a UUID as its 16 bytes), read back as its text."""

    impl = Stored
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return id_key(value) if isinstance(value, str) else value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return value if value is None or isinstance(value, str) else id_text(value)


class EventAt(TypeDecorator[str]):
    """An event's ``at`` as ``codec.at_key`` stores it (UTC as integer microseconds), read
    back as its text, byte for byte."""

    impl = Stored
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return at_key(value) if isinstance(value, str) else value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return value if value is None else at_text(value)


class EventKind(TypeDecorator[str]):
    """An event's kind as ``codec.kind_key`` stores it (a small integer), read back as its
    text."""

    impl = Stored
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return kind_key(value) if isinstance(value, str) else value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return value if value is None else kind_text(value)


events = Table(
    "events",
    metadata,
    Column("pos", Integer, primary_key=True, autoincrement=True),  # local order of application
    # Compact stored forms (0006_events, ``codec``), read and written as the texts through
    # SQLAlchemy; plain SQL passes ``codec.id_key`` / ``kind_key`` / ``at_key`` values.
    Column("id", EventId(), nullable=False, unique=True),  # codec.id_key
    Column("terminal_id", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("kind", EventKind(), nullable=False),  # codec.kind_key
    Column("at", EventAt(), nullable=False),  # codec.at_key
    Column("customer_id", EventId()),  # codec.id_key
    Column("key", String(128)),
    # codec.encode_payload of the canonical JSON {"p": postings, "d": data} (0005; the
    # column is declared TEXT: rows written before 0005 hold the text itself)
    Column("payload", Text, nullable=False),
    # NULL: the ``hash`` of this till's event ``seq - 1`` in this table (0006_events;
    # ``store.Tx.prev_hash`` puts it back)
    Column("prev_hash", LargeBinary(32)),
    Column("hash", LargeBinary(32), nullable=False),
    UniqueConstraint("terminal_id", "seq", name="uq_events_terminal_seq"),
)
# Anonymous events (a sale without a card) are not in it (0006_events).
Index(
    "ix_events_customer",
    events.c.customer_id,
    events.c.pos,
    sqlite_where=events.c.customer_id.isnot(None),
)

heads = Table(
    "heads",
    metadata,
    Column("terminal_id", String(64), primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
)

customers = Table(
    "customers",
    metadata,
    Column("customer_id", String(36), primary_key=True),
    Column("enrolled_at", String(40), nullable=False),
    Column("profile", Text, nullable=False),  # JSON: name, email, phone, consents, referral
)

cards = Table(
    "cards",
    metadata,
    Column("code", String(32), primary_key=True),
    Column("customer_id", String(36), nullable=False),
    Column("status", String(16), nullable=False),  # active | blocked
    Column("issued_at", String(40), nullable=False),
    Column("reason", Text),
)
Index("ix_cards_customer", cards.c.customer_id)

balances = Table(
    "balances",
    metadata,
    Column("customer_id", String(36), nullable=False),
    Column("program", String(64), nullable=False),
    Column("unit", String(8), nullable=False),
    Column("balance", Integer, nullable=False),
    PrimaryKeyConstraint("customer_id", "program", "unit"),
    sqlite_with_rowid=False,  # the key is the one b-tree (0006_events)
)


# Lots and receipts in compact stored forms (0005_compact, see ``codec``): ids as 16 bytes,
# times as integer microseconds; no rowid, the primary key is the one b-tree.
lots = Table(
    "lots",
    metadata,
    Column("customer_id", Stored(), nullable=False),  # codec.id_key
    Column("program", String(64), nullable=False),
    Column("lot", Stored(), nullable=False),  # codec.lot_key of the lot id
    Column("earned_at", Stored(), nullable=False),  # codec.time_key
    Column("expires_at", Stored()),  # codec.time_key
    Column("remaining", Integer, nullable=False),
    PrimaryKeyConstraint("customer_id", "program", "lot"),
    sqlite_with_rowid=False,
)

receipts = Table(
    "receipts",
    metadata,
    Column("key", String(128), primary_key=True),  # "sale:<receipt_id>" or "refund:<refund_id>"
    # codec.id_key; the request hash a retry is checked against is the event's own
    # (``data.request_hash``, under the hash chain), not copied here (0005_compact)
    Column("event_id", Stored(), nullable=False),
    Column("refunded", Text, nullable=False),  # JSON {line index: units refunded so far}
    Column("response", LargeBinary, nullable=False),  # codec.pack_response
    sqlite_with_rowid=False,
)

# Points redeemed and wallet money spent by sales, and wallet payouts (a projection;
# 0005_compact, 0008_wallet_limits): what the offline limits count, instead of an index over
# every event. One row per such event.
redemptions = Table(
    "redemptions",
    metadata,
    Column("event_id", Stored(), primary_key=True),  # codec.id_key
    Column("terminal_id", String(64), nullable=False),
    Column("at", String(40), nullable=False),  # events.at
    Column("customer_id", String(36)),
    Column("points", Integer, nullable=False),
    # Wallet money (minor units) the sale paid from a cashback wallet, or a payout paid out
    # (0008_wallet_limits): those have a row even with no points redeemed.
    Column("wallet", Integer, nullable=False, server_default="0"),
    sqlite_with_rowid=False,
)
Index("ix_redemptions_terminal_at", redemptions.c.terminal_id, redemptions.c.at)

# Compression dictionaries of the stored payloads and answers (``codec.Dictionaries``): part
# of the stored format, written once, never changed or deleted.
codec_dicts = Table(
    "codec_dicts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("purpose", String(16), nullable=False),  # payload | response
    Column("zdict", LargeBinary, nullable=False),
)

# -- sync bookkeeping (migration 0002) --------------------------------------------------------
# Not projections: what the server acknowledged and where the pull stands. ``events`` stays
# append-only; remote events are appended to it with their own till's id, seq and hashes.

sync_state = Table(
    "sync_state",
    metadata,
    Column("id", Integer, primary_key=True),  # always 1
    Column("epoch", Integer, nullable=False),
    Column("acked_seq", Integer, nullable=False),  # own events up to here are on the server
    Column("cursor", String(200)),  # the server's pull cursor (opaque)
    Column("last_push_at", String(40)),
    Column("last_pull_at", String(40)),
)

sync_credentials = Table(
    "sync_credentials",
    metadata,
    Column("id", Integer, primary_key=True),  # always 1
    Column("server_url", Text, nullable=False),
    Column("terminal_id", String(64), nullable=False),
    Column("merchant_id", String(64), nullable=False),
    Column("store_id", String(64), nullable=False),
    Column("credential", Text, nullable=False),
    Column("paired_at", String(40), nullable=False),
)

sync_conflicts = Table(
    "sync_conflicts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("direction", String(8), nullable=False),  # push | pull
    Column("event_id", String(36), nullable=False),
    Column("terminal_id", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("reason", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Column("recorded_at", String(40), nullable=False),
)

chain_stubs = Table(
    "chain_stubs",
    metadata,
    Column("terminal_id", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    # Several stubs may share a slot: a restored till's forked chain (0007_stub_slots).
    PrimaryKeyConstraint("terminal_id", "seq", "hash"),
)

# -- the program catalog (revision 0002_catalog) -------------------------------------------

usage = Table(
    "usage",
    metadata,
    # "promo:<program>", "coupon:<serial>", "voucher:<gift program>": uses recorded by sales
    Column("key", String(160), primary_key=True),
    Column("count", Integer, nullable=False),
)

coupons = Table(
    "coupons",
    metadata,
    Column("serial", String(16), primary_key=True),
    Column("program", String(64), nullable=False),
    Column("customer_id", String(36)),
    Column("code", Text, nullable=False),
    Column("issued_at", String(40), nullable=False),
    Column("expires_at", String(40), nullable=False),
)
Index("ix_coupons_customer", coupons.c.customer_id)

referrals = Table(
    "referrals",
    metadata,
    Column("code", String(16), primary_key=True),
    Column("customer_id", String(36), nullable=False),
)

# -- bootstrap from a server snapshot (revision 0004_bootstrap) ----------------------------
# The baseline a bootstrapped till started from (``ledger.snapshot``): the snapshot as
# received, so that verify and rebuild are "baseline + the events after it". Not a
# projection: written once by the bootstrap, never changed after it is complete.

baseline = Table(
    "baseline",
    metadata,
    Column("id", Integer, primary_key=True),  # always 1
    Column("status", String(16), nullable=False),  # loading | complete
    Column("cursor", String(200), nullable=False),  # the server position of the snapshot
    Column("scope", String(16), nullable=False),  # all | region
    Column("digest", String(64), nullable=False),  # the server's SHA-256 of the snapshot
    Column("header", LargeBinary, nullable=False),  # zlib: [cursor, heads, usage, coupons]
    Column("next_after", String(36)),  # loading: the customer id to continue after
    Column("pages", Integer, nullable=False),
    Column("customers", Integer, nullable=False),
    Column("total", Integer, nullable=False),  # customers the server announced
    Column("started_at", String(40), nullable=False),
    Column("completed_at", String(40)),
)

baseline_pages = Table(
    "baseline_pages",
    metadata,
    Column("page", Integer, primary_key=True),
    Column("rows", Integer, nullable=False),
    Column("body", LargeBinary, nullable=False),  # zlib: wire customers, one per line
)
