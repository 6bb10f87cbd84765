"""Sync bookkeeping: what the server acknowledged, the pull cursor, conflicts, credentials,
and chain stubs of other tills (slots whose events the server does not serve).

``events`` stays append-only: nothing here changes it.

Revision ID: 0003_sync
Revises: 0002_catalog
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_sync"
# Chained after 0002_catalog (added concurrently) so the ledger has a single head.
down_revision = "0002_catalog"


def upgrade() -> None:
    op.create_table(
        "sync_state",
        sa.Column("id", sa.Integer, primary_key=True),  # always 1
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("acked_seq", sa.Integer, nullable=False),
        sa.Column("cursor", sa.String(200)),
        sa.Column("last_push_at", sa.String(40)),
        sa.Column("last_pull_at", sa.String(40)),
    )
    op.create_table(
        "sync_credentials",
        sa.Column("id", sa.Integer, primary_key=True),  # always 1
        sa.Column("server_url", sa.Text, nullable=False),
        sa.Column("terminal_id", sa.String(64), nullable=False),
        sa.Column("merchant_id", sa.String(64), nullable=False),
        sa.Column("store_id", sa.String(64), nullable=False),
        sa.Column("credential", sa.Text, nullable=False),
        sa.Column("paired_at", sa.String(40), nullable=False),
    )
    op.create_table(
        "sync_conflicts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("direction", sa.String(8), nullable=False),  # push | pull
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("terminal_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.String(40), nullable=False),
    )
    op.create_table(
        "chain_stubs",
        sa.Column("terminal_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("terminal_id", "seq"),
    )


def downgrade() -> None:
    for table in ("chain_stubs", "sync_conflicts", "sync_credentials", "sync_state"):
        op.drop_table(table)
