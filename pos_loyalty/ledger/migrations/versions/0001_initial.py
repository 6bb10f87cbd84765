"""The first ledger schema: events, heads and projections.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("pos", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("terminal_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("customer_id", sa.String(36)),
        sa.Column("key", sa.String(128)),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.UniqueConstraint("terminal_id", "seq", name="uq_events_terminal_seq"),
    )
    op.create_index("ix_events_customer", "events", ["customer_id", "pos"])
    op.create_index("ix_events_terminal_kind_at", "events", ["terminal_id", "kind", "at"])
    op.create_table(
        "heads",
        sa.Column("terminal_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    op.create_table(
        "customers",
        sa.Column("customer_id", sa.String(36), primary_key=True),
        sa.Column("enrolled_at", sa.String(40), nullable=False),
        sa.Column("profile", sa.Text, nullable=False),
    )
    op.create_table(
        "cards",
        sa.Column("code", sa.String(32), primary_key=True),
        sa.Column("customer_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("issued_at", sa.String(40), nullable=False),
        sa.Column("reason", sa.Text),
    )
    op.create_index("ix_cards_customer", "cards", ["customer_id"])
    op.create_table(
        "balances",
        sa.Column("customer_id", sa.String(36), nullable=False),
        sa.Column("program", sa.String(64), nullable=False),
        sa.Column("unit", sa.String(8), nullable=False),
        sa.Column("balance", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "program", "unit"),
    )
    op.create_table(
        "lots",
        sa.Column("lot_id", sa.String(110), primary_key=True),
        sa.Column("customer_id", sa.String(36), nullable=False),
        sa.Column("program", sa.String(64), nullable=False),
        sa.Column("earned_at", sa.String(40), nullable=False),
        sa.Column("expires_at", sa.String(40)),
        sa.Column("remaining", sa.Integer, nullable=False),
    )
    op.create_index("ix_lots_customer", "lots", ["customer_id"])
    op.create_table(
        "receipts",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("refunded", sa.Text, nullable=False),
        sa.Column("response", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    for table in ("receipts", "lots", "balances", "cards", "customers", "heads", "events"):
        op.drop_table(table)
