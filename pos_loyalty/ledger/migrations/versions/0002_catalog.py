"""The program catalog: usage counters, issued coupons, referral codes.

Revision ID: 0002_catalog
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_catalog"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "usage",
        sa.Column("key", sa.String(160), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
    )
    op.create_table(
        "coupons",
        sa.Column("serial", sa.String(16), primary_key=True),
        sa.Column("program", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(36)),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("issued_at", sa.String(40), nullable=False),
        sa.Column("expires_at", sa.String(40), nullable=False),
    )
    op.create_index("ix_coupons_customer", "coupons", ["customer_id"])
    op.create_table(
        "referrals",
        sa.Column("code", sa.String(16), primary_key=True),
        sa.Column("customer_id", sa.String(36), nullable=False),
    )


def downgrade() -> None:
    for table in ("referrals", "coupons", "usage"):
        op.drop_table(table)
