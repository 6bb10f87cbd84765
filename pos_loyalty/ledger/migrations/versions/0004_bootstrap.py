"""Bootstrap from a server snapshot: the baseline a till started from.

``baseline`` (one row: the snapshot's cursor, scope, the server's digest, its header of chain
heads, usage counters and customer-less coupons, and the loading progress) and
``baseline_pages`` (the customers as received, compressed, one row per page). See
``pos_loyalty.ledger.snapshot``.

Revision ID: 0004_bootstrap
Revises: 0003_sync
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_bootstrap"
down_revision = "0003_sync"


def upgrade() -> None:
    op.create_table(
        "baseline",
        sa.Column("id", sa.Integer, primary_key=True),  # always 1
        sa.Column("status", sa.String(16), nullable=False),  # loading | complete
        sa.Column("cursor", sa.String(200), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),  # all | region
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("header", sa.LargeBinary, nullable=False),
        sa.Column("next_after", sa.String(36)),
        sa.Column("pages", sa.Integer, nullable=False),
        sa.Column("customers", sa.Integer, nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("started_at", sa.String(40), nullable=False),
        sa.Column("completed_at", sa.String(40)),
    )
    op.create_table(
        "baseline_pages",
        sa.Column("page", sa.Integer, primary_key=True),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    for table in ("baseline_pages", "baseline"):
        op.drop_table(table)
