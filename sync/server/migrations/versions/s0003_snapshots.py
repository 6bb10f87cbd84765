"""The bootstrap snapshot's fold, persisted per merchant (``sync.server.snapshots``): the
merchant-wide state at one server position and every customer's encoded wire form.

Revision ID: s0003
Revises: s0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "s0003"
down_revision = "s0002"


def upgrade() -> None:
    op.create_table(
        "snapshot_state",
        sa.Column("merchant_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("state", sa.LargeBinary, nullable=False),
        sa.Column("saved_at", sa.String(40), nullable=False),
    )
    op.create_table(
        "snapshot_customers",
        sa.Column("merchant_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(36), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("merchant_id", "customer_id"),
    )


def downgrade() -> None:
    op.drop_table("snapshot_customers")
    op.drop_table("snapshot_state")
