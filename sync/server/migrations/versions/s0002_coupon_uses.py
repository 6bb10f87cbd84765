"""Single-use coupons across tills: the first ingested use of a coupon per merchant, and
conflict rows that name both events (the later use, and the one it collided with).

Revision ID: s0002
Revises: s0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "s0002"
down_revision = "s0001"


def upgrade() -> None:
    op.create_table(
        "coupon_uses",
        sa.Column("merchant_id", sa.String(64), nullable=False),
        sa.Column("serial", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("terminal_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(36)),
        sa.Column("used_at", sa.String(40), nullable=False),
        sa.PrimaryKeyConstraint("merchant_id", "serial"),
    )
    with op.batch_alter_table("conflicts") as batch:
        batch.add_column(sa.Column("customer_id", sa.String(36)))
        batch.add_column(sa.Column("other_event_id", sa.String(36)))
        batch.add_column(sa.Column("other_terminal_id", sa.String(64)))
    op.create_index("ix_conflicts_event", "conflicts", ["merchant_id", "event_id"])


def downgrade() -> None:
    op.drop_index("ix_conflicts_event", table_name="conflicts")
    with op.batch_alter_table("conflicts") as batch:
        batch.drop_column("other_terminal_id")
        batch.drop_column("other_event_id")
        batch.drop_column("customer_id")
    op.drop_table("coupon_uses")
