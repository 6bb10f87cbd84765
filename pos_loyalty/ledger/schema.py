"""The ledger's tables (SQLAlchemy Core). Alembic migrations create them; this mirrors head.

``events`` is append-only and the source of truth. Everything else is a projection, updated
in the same transaction as the append and rebuildable from ``events`` (``verify``), except
``receipts.response``: the first answer given for a receipt id, kept verbatim so a retried
commit answers exactly the same.
"""

from __future__ import annotations

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

metadata = MetaData()

events = Table(
    "events",
    metadata,
    Column("pos", Integer, primary_key=True, autoincrement=True),  # local order of application
    Column("id", String(36), nullable=False, unique=True),
    Column("terminal_id", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("at", String(40), nullable=False),
    Column("customer_id", String(36)),
    Column("key", String(128)),
    Column("payload", Text, nullable=False),  # canonical JSON {"p": postings, "d": data}
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    UniqueConstraint("terminal_id", "seq", name="uq_events_terminal_seq"),
)
Index("ix_events_customer", events.c.customer_id, events.c.pos)
Index("ix_events_terminal_kind_at", events.c.terminal_id, events.c.kind, events.c.at)

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
)

lots = Table(
    "lots",
    metadata,
    Column("lot_id", String(110), primary_key=True),
    Column("customer_id", String(36), nullable=False),
    Column("program", String(64), nullable=False),
    Column("earned_at", String(40), nullable=False),
    Column("expires_at", String(40)),
    Column("remaining", Integer, nullable=False),
)
Index("ix_lots_customer", lots.c.customer_id)

receipts = Table(
    "receipts",
    metadata,
    Column("key", String(128), primary_key=True),  # "sale:<receipt_id>" or "refund:<refund_id>"
    Column("event_id", String(36), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("refunded", Text, nullable=False),  # JSON {line index: units refunded so far}
    Column("response", LargeBinary, nullable=False),  # codec.pack_response,
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
    PrimaryKeyConstraint("terminal_id", "seq"),
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
