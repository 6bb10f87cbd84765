"""What the server last heard from each till: when (any sync round), and which program
configuration version it runs or refused (``server terminals``).

Revision ID: s0004
Revises: s0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "s0004"
down_revision = "s0003"


def upgrade() -> None:
    with op.batch_alter_table("terminals") as batch:
        batch.add_column(sa.Column("last_seen_at", sa.String(40)))
        batch.add_column(sa.Column("programs_version", sa.Integer))
        batch.add_column(sa.Column("programs_refused", sa.Integer))
        batch.add_column(sa.Column("programs_problem", sa.String(300)))


def downgrade() -> None:
    with op.batch_alter_table("terminals") as batch:
        batch.drop_column("programs_problem")
        batch.drop_column("programs_refused")
        batch.drop_column("programs_version")
        batch.drop_column("last_seen_at")
