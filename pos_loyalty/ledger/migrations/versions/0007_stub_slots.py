"""Chain stubs keyed by their slot and hash: several stubs may share a till's seq.

A till restored from a backup forks its chain (a new epoch, ``docs/sync.md``): the server
keeps both copies of a re-used seq, so another till can be sent two stubs for one
(till, seq) — say one for an event of another region (``scope=region``) and one for the
restored till's quarantined event. Keyed by (terminal_id, seq) the second was dropped, and
the restored till's next event then linked to nothing held here.

SQLite cannot change a primary key: the table is rebuilt. Downgrade keeps one stub per
(terminal_id, seq), the one first stored.

Revision ID: 0007_stub_slots
Revises: 0006_events
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_stub_slots"
down_revision = "0006_events"

COLUMNS = "terminal_id, seq, event_id, prev_hash, hash"


def _rebuild(key: str, copy: str) -> None:
    op.create_table(
        "chain_stubs_new",
        sa.Column("terminal_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint(*key.split(", ")),
    )
    op.execute(
        f"{copy} INTO chain_stubs_new ({COLUMNS}) SELECT {COLUMNS} FROM chain_stubs ORDER BY rowid"
    )
    op.drop_table("chain_stubs")
    op.rename_table("chain_stubs_new", "chain_stubs")


def upgrade() -> None:
    _rebuild("terminal_id, seq, hash", "INSERT")


def downgrade() -> None:
    _rebuild("terminal_id, seq", "INSERT OR IGNORE")
