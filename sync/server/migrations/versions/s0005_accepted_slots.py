"""An accepted chain slot is its ``events`` row; ``chain`` keeps only the other slots.

Every accepted slot used to be written twice: a ``chain`` row (terminal, epoch, seq, server
position, the event id, both hashes) and the ``events`` row, which holds all of it too. Only
the slots whose event is not in ``events`` (a superseded expiry copy, a local-only
reconciliation, a quarantined conflict) stay in ``chain``; readers (ingest's duplicate check,
pull, the snapshot's chain heads) read both tables. On PostgreSQL ``balances`` gets
``fillfactor = 50``: every ingested batch updates ~one row per customer it touches, and the
free space lets PostgreSQL update in place (HOT, no index entry per update). It applies to
pages written from now on; a large existing table gets it everywhere after ``VACUUM FULL
balances`` (which locks the table while it runs).

Revision ID: s0005
Revises: s0004
"""

from __future__ import annotations

from alembic import op

revision = "s0005"
down_revision = "s0004"


def upgrade() -> None:
    op.execute("DELETE FROM chain WHERE status = 'accepted'")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE balances SET (fillfactor = 50)")


def downgrade() -> None:
    op.execute(
        "INSERT INTO chain (terminal_id, epoch, seq, merchant_id, server_seq, event_id,"
        " prev_hash, hash, status, body)"
        " SELECT terminal_id, epoch, seq, merchant_id, server_seq, id, prev_hash, hash,"
        " 'accepted', NULL FROM events"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE balances RESET (fillfactor)")
