"""Central server schema: merchants, stores, terminals, tokens, events, chain, projections.

Revision ID: s0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "s0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "merchants",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "stores",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("merchant_id", sa.String(64), nullable=False),
        sa.Column("region", sa.String(64)),
    )
    op.create_table(
        "terminals",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("merchant_id", sa.String(64), nullable=False),
        sa.Column("store_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("head_seq", sa.BigInteger, nullable=False),
        sa.Column("head_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
    )
    op.create_table(
        "tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("terminal_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("used_at", sa.String(40)),
        sa.Column("revoked_at", sa.String(40)),
    )
    op.create_index("ix_tokens_terminal", "tokens", ["terminal_id"])
    op.create_table(
        "events",
        sa.Column("merchant_id", sa.String(64), nullable=False),
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("server_seq", sa.BigInteger, nullable=False),
        sa.Column("terminal_id", sa.String(64), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("customer_id", sa.String(36)),
        sa.Column("key", sa.String(128)),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.Column("received_at", sa.String(40), nullable=False),
        sa.PrimaryKeyConstraint("merchant_id", "id"),
        sa.UniqueConstraint("merchant_id", "server_seq", name="uq_events_merchant_seq"),
    )
    op.create_index("ix_events_terminal_seq", "events", ["terminal_id", "seq"])
    op.create_index("ix_events_customer", "events", ["merchant_id", "customer_id"])
    op.create_table(
        "chain",
        sa.Column("terminal_id", sa.String(64), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("merchant_id", sa.String(64), nullable=False),
        sa.Column("server_seq", sa.BigInteger, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("body", sa.Text),
        sa.PrimaryKeyConstraint("terminal_id", "epoch", "seq"),
        sa.UniqueConstraint("merchant_id", "server_seq", name="uq_chain_merchant_seq"),
    )
    op.create_index("ix_chain_terminal_seq", "chain", ["terminal_id", "seq"])
    op.create_table(
        "balances",
        sa.Column("merchant_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(36), nullable=False),
        sa.Column("program", sa.String(64), nullable=False),
        sa.Column("unit", sa.String(8), nullable=False),
        sa.Column("balance", sa.BigInteger, nullable=False),
        sa.Column("overdraft", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("merchant_id", "customer_id", "program", "unit"),
    )
    op.create_table(
        "overdrafts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("merchant_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(36), nullable=False),
        sa.Column("program", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("terminal_id", sa.String(64), nullable=False),
        sa.Column("balance_after", sa.BigInteger, nullable=False),
        sa.Column("flagged_at", sa.String(40), nullable=False),
    )
    op.create_table(
        "conflicts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("merchant_id", sa.String(64), nullable=False),
        sa.Column("terminal_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(36)),
        sa.Column("seq", sa.BigInteger),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.String(40), nullable=False),
    )
    op.create_table(
        "programs",
        sa.Column("merchant_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("config", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "programs",
        "conflicts",
        "overdrafts",
        "balances",
        "chain",
        "events",
        "tokens",
        "terminals",
        "stores",
        "merchants",
    ):
        op.drop_table(table)
