"""The central server's tables (SQLAlchemy Core). Alembic (``sync/server/migrations``) creates
them; this mirrors head. Works on PostgreSQL (production) and SQLite (embedded default).

- ``events``: the by-id event store, one row per event *effect* (dedup on (merchant, id)).
- ``chain``: the till chain slots whose event is *not* in ``events`` (superseded expiry copy,
  local-only reconciliation, quarantined fork), by (terminal, epoch, seq). An accepted slot
  is its ``events`` row (s0005; it holds the same terminal, epoch, seq, position and hashes),
  so a till's whole chain is both tables together. ``server_seq`` is the merchant-wide
  position readers page by, one per slot across both tables; it is assigned under the
  merchant's counter row lock inside the ingest transaction, so it follows commit order.
- ``balances`` / ``overdrafts``: the server's projections.
- ``coupon_uses``: the first ingested use of each single-use coupon (per merchant); a later
  use is kept and counted, and recorded in ``conflicts`` (``coupon_reused``).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
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

merchants = Table(
    "merchants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("last_seq", BigInteger, nullable=False, default=0),  # the server_seq counter
)

stores = Table(
    "stores",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("merchant_id", String(64), nullable=False),
    Column("region", String(64)),
)

terminals = Table(
    "terminals",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("merchant_id", String(64), nullable=False),
    Column("store_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # active | revoked
    Column("epoch", Integer, nullable=False, default=1),
    Column("head_seq", BigInteger, nullable=False, default=0),
    Column("head_hash", LargeBinary(32), nullable=False),
    Column("created_at", String(40), nullable=False),
    # s0004: what the till last told the server (``ServerStore.note_round``): when it was
    # last heard from (a push or a sync round's configuration check), the program
    # configuration version it runs, and a newer version it refused with the reason.
    Column("last_seen_at", String(40)),
    Column("programs_version", Integer),
    Column("programs_refused", Integer),
    Column("programs_problem", String(300)),
)

tokens = Table(
    "tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # sha256 hex of the secret
    Column("kind", String(16), nullable=False),  # pairing | till
    Column("terminal_id", String(64), nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("used_at", String(40)),
    Column("revoked_at", String(40)),
)
Index("ix_tokens_terminal", tokens.c.terminal_id)

events = Table(
    "events",
    metadata,
    Column("merchant_id", String(64), nullable=False),
    Column("id", String(36), nullable=False),
    Column("server_seq", BigInteger, nullable=False),
    Column("terminal_id", String(64), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("at", String(40), nullable=False),
    Column("customer_id", String(36)),
    Column("key", String(128)),
    Column("payload", Text, nullable=False),
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    Column("received_at", String(40), nullable=False),
    PrimaryKeyConstraint("merchant_id", "id"),
    UniqueConstraint("merchant_id", "server_seq", name="uq_events_merchant_seq"),
)
Index("ix_events_terminal_seq", events.c.terminal_id, events.c.seq)
Index("ix_events_customer", events.c.merchant_id, events.c.customer_id)

chain = Table(
    "chain",
    metadata,
    Column("terminal_id", String(64), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("merchant_id", String(64), nullable=False),
    Column("server_seq", BigInteger, nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    # superseded (expiry another till decided first) | local_only | conflict ("accepted"
    # slots are ``events`` rows since s0005)
    Column("status", String(16), nullable=False),
    Column("body", Text),  # the full wire event when it is not in ``events``
    PrimaryKeyConstraint("terminal_id", "epoch", "seq"),
    UniqueConstraint("merchant_id", "server_seq", name="uq_chain_merchant_seq"),
)
Index("ix_chain_terminal_seq", chain.c.terminal_id, chain.c.seq)

balances = Table(
    "balances",
    metadata,
    Column("merchant_id", String(64), nullable=False),
    Column("customer_id", String(36), nullable=False),
    Column("program", String(64), nullable=False),
    Column("unit", String(8), nullable=False),
    Column("balance", BigInteger, nullable=False),
    Column("overdraft", Boolean, nullable=False, default=False),
    PrimaryKeyConstraint("merchant_id", "customer_id", "program", "unit"),
    # Room on each page for in-place (HOT) updates: each ingested batch updates the rows of
    # the customers it touches (s0005).
    postgresql_with={"fillfactor": 50},
)

overdrafts = Table(
    "overdrafts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("merchant_id", String(64), nullable=False),
    Column("customer_id", String(36), nullable=False),
    Column("program", String(64), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("terminal_id", String(64), nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("flagged_at", String(40), nullable=False),
)

conflicts = Table(
    "conflicts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("merchant_id", String(64), nullable=False),
    Column("terminal_id", String(64), nullable=False),
    Column("event_id", String(36)),
    Column("seq", BigInteger),
    Column("reason", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Column("recorded_at", String(40), nullable=False),
    # coupon_reused: the customer, and the first ingested use this one collided with
    Column("customer_id", String(36)),
    Column("other_event_id", String(36)),
    Column("other_terminal_id", String(64)),
)
Index("ix_conflicts_event", conflicts.c.merchant_id, conflicts.c.event_id)

coupon_uses = Table(
    "coupon_uses",
    metadata,
    Column("merchant_id", String(64), nullable=False),
    Column("serial", String(64), nullable=False),  # the coupon id (``coupon:<serial>`` use)
    Column("event_id", String(36), nullable=False),  # the first ingested sale that used it
    Column("terminal_id", String(64), nullable=False),
    Column("customer_id", String(36)),
    Column("used_at", String(40), nullable=False),
    PrimaryKeyConstraint("merchant_id", "serial"),
)

programs = Table(
    "programs",
    metadata,
    Column("merchant_id", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("config", Text, nullable=False),
)

# The bootstrap snapshot's fold as of ``seq`` (``sync.server.snapshots``), so that a server
# process does not fold every event again after a restart: ``state`` is
# ``SnapshotFold.save_state()``, ``snapshot_customers`` every customer's encoded wire form at
# the same position. Written together, in one transaction, only forwards.
snapshot_state = Table(
    "snapshot_state",
    metadata,
    Column("merchant_id", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("state", LargeBinary, nullable=False),
    Column("saved_at", String(40), nullable=False),
)

snapshot_customers = Table(
    "snapshot_customers",
    metadata,
    Column("merchant_id", String(64), nullable=False),
    Column("customer_id", String(36), nullable=False),
    Column("body", LargeBinary, nullable=False),
    PrimaryKeyConstraint("merchant_id", "customer_id"),
)
