"""Bootstrap from a server snapshot: the baseline a till started from.

Placeholder revision reserved so that later revisions can chain after it; the snapshot
bootstrap work fills in its tables.

Revision ID: 0004_bootstrap
Revises: 0003_sync
"""

from __future__ import annotations

revision = "0004_bootstrap"
down_revision = "0003_sync"


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
