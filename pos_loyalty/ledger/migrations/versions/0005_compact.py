"""Compact stored forms: compressed payloads and answers, compact lots and receipts.

- ``codec_dicts``: compression dictionaries (``codec.Dictionaries``), trained here from the
  ledger's newest rows (and later by the till as it grows).
- ``events.payload``: the canonical JSON text becomes ``codec.encode_payload`` of it (the
  text, and so every hash, is unchanged: decoding gives it back byte for byte).
- ``ix_events_terminal_kind_at`` dropped: its one reader (the offline redemption limits)
  reads the new ``redemptions`` projection, one row per sale that redeemed points.
- ``lots`` and ``receipts`` rebuilt WITHOUT ROWID with ids as 16 bytes and times as integer
  microseconds (``codec.id_key``, ``lot_key``, ``time_key``); ``lots`` is keyed by
  (customer, program, lot), so ``ix_lots_customer`` goes. ``receipts.request_hash`` goes:
  it is the event's own ``data.request_hash``, read from there. Cached answers are re-packed
  with the trained dictionary.

Rows are converted in batches by position; nothing is added to or removed from ``events``.

Revision ID: 0005_compact
Revises: 0004_bootstrap
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from alembic import op

from pos_loyalty.ledger.codec import (
    PAYLOAD,
    RESPONSE,
    Dictionaries,
    decode_payload,
    encode_payload,
    id_key,
    id_text,
    lot_key,
    lot_text,
    pack_response,
    response_text,
    time_key,
    time_value,
    train,
)

revision = "0005_compact"
down_revision = "0004_bootstrap"

BATCH = 2000


def lot_row(
    lot_id: str,
    customer_id: str,
    program: str,
    earned_at: str,
    expires_at: str | None,
    remaining: int,
) -> tuple[Any, ...]:
    """A ``lots`` row in the stored forms of this revision (later ones change them: this
    is not ``projections.lot_row``)."""
    return (
        id_key(customer_id),
        program,
        lot_key(lot_id, program),
        time_key(datetime.fromisoformat(earned_at)),
        None if expires_at is None else time_key(datetime.fromisoformat(expires_at)),
        remaining,
    )


def _raw() -> sqlite3.Connection:
    return cast(sqlite3.Connection, op.get_bind().connection.driver_connection)


def _batches(raw: sqlite3.Connection, sql: str, first: Any) -> Iterator[list[tuple[Any, ...]]]:
    """Rows of ``sql`` (selecting its key first, ``WHERE key > ? ORDER BY key LIMIT n``) in
    batches from just after ``first``, so the table can be written between them."""
    last = first
    while rows := raw.execute(sql, (last,)).fetchall():
        yield rows
        last = rows[-1][0]


def _train(raw: sqlite3.Connection) -> Dictionaries:
    """Dictionaries trained from the newest payloads and answers, stored in ``codec_dicts``."""
    dicts = Dictionaries()
    payloads = [
        decode_payload(p).encode()
        for (p,) in reversed(
            raw.execute("SELECT payload FROM events ORDER BY pos DESC LIMIT 128").fetchall()
        )
    ]
    responses = [
        response_text(r)
        for (r,) in reversed(
            raw.execute(
                "SELECT response FROM receipts WHERE key LIKE 'sale:%' ORDER BY rowid DESC LIMIT 64"
            ).fetchall()
        )
    ]
    for purpose, samples in ((PAYLOAD, payloads), (RESPONSE, responses)):
        zdict = train([s for s in samples if s])
        if len(zdict) >= 1024:
            cur = raw.execute(
                "INSERT INTO codec_dicts (purpose, zdict) VALUES (?, ?)", (purpose, zdict)
            )
            assert cur.lastrowid is not None
            dicts.add(cur.lastrowid, purpose, zdict)
    return dicts


def upgrade() -> None:
    op.create_table(
        "codec_dicts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("zdict", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "redemptions",
        sa.Column("event_id", sa.LargeBinary, primary_key=True),
        sa.Column("terminal_id", sa.String(64), nullable=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("customer_id", sa.String(36)),
        sa.Column("points", sa.Integer, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_redemptions_terminal_at", "redemptions", ["terminal_id", "at"])
    op.create_table(
        "lots_new",
        sa.Column("customer_id", sa.LargeBinary, nullable=False),
        sa.Column("program", sa.String(64), nullable=False),
        sa.Column("lot", sa.LargeBinary, nullable=False),
        sa.Column("earned_at", sa.LargeBinary, nullable=False),
        sa.Column("expires_at", sa.LargeBinary),
        sa.Column("remaining", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "program", "lot"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "receipts_new",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("event_id", sa.LargeBinary, nullable=False),
        sa.Column("refunded", sa.Text, nullable=False),
        sa.Column("response", sa.LargeBinary, nullable=False),
        sqlite_with_rowid=False,
    )
    raw = _raw()
    dicts = _train(raw)

    # Which sale events have their receipt here (a remote sale whose receipt id was taken
    # has none): those rows of ``redemptions`` follow exactly as ``apply_side_tables`` does.
    receipted = {str(event_id) for (event_id,) in raw.execute("SELECT event_id FROM receipts")}
    for rows in _batches(
        raw,
        "SELECT pos, id, terminal_id, kind, at, customer_id, payload FROM events "
        f"WHERE pos > ? ORDER BY pos LIMIT {BATCH}",
        -1,
    ):
        updates = []
        redemptions = []
        for pos, event_id, terminal_id, kind, at, customer_id, payload in rows:
            text = decode_payload(payload)
            if isinstance(payload, str):
                updates.append((encode_payload(text, dicts), pos))
            if kind == "sale.committed" and event_id in receipted:
                redeemed = -sum(
                    int(p["delta"])
                    for p in json.loads(text)["p"]
                    if p["unit"] == "points" and int(p["delta"]) < 0
                )
                if redeemed:
                    redemptions.append((id_key(event_id), terminal_id, at, customer_id, redeemed))
        raw.executemany("UPDATE events SET payload = ? WHERE pos = ?", updates)
        raw.executemany(
            "INSERT INTO redemptions (event_id, terminal_id, at, customer_id, points) "
            "VALUES (?, ?, ?, ?, ?)",
            redemptions,
        )
    op.drop_index("ix_events_terminal_kind_at", table_name="events")

    for rows in _batches(
        raw,
        "SELECT lot_id, customer_id, program, earned_at, expires_at, remaining FROM lots "
        f"WHERE lot_id > ? ORDER BY lot_id LIMIT {BATCH}",
        "",
    ):
        raw.executemany(
            "INSERT INTO lots_new (customer_id, program, lot, earned_at, expires_at, remaining) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [lot_row(*row) for row in rows],
        )
    op.drop_index("ix_lots_customer", table_name="lots")
    op.drop_table("lots")
    op.rename_table("lots_new", "lots")

    for rows in _batches(
        raw,
        "SELECT key, event_id, refunded, response FROM receipts "
        f"WHERE key > ? ORDER BY key LIMIT {BATCH}",
        "",
    ):
        raw.executemany(
            "INSERT INTO receipts_new (key, event_id, refunded, response) VALUES (?, ?, ?, ?)",
            [
                (
                    key,
                    id_key(event_id),
                    refunded,
                    pack_response(json.loads(answer), dicts)
                    if (answer := response_text(response))
                    else b"",
                )
                for key, event_id, refunded, response in rows
            ],
        )
    op.drop_table("receipts")
    op.rename_table("receipts_new", "receipts")


def downgrade() -> None:
    """Back to the forms of 0004: payloads as text, lots and receipts with rowids and text
    columns, answers as zlib streams; the dictionaries they needed go last."""
    from pos_loyalty.ledger.codec import RESPONSE_ZDICT, canonical

    raw = _raw()
    dicts = Dictionaries(
        loader=lambda ident: cast(
            "tuple[str, bytes] | None",
            raw.execute("SELECT purpose, zdict FROM codec_dicts WHERE id = ?", (ident,)).fetchone(),
        )
    )
    for rows in _batches(
        raw, f"SELECT pos, payload FROM events WHERE pos > ? ORDER BY pos LIMIT {BATCH}", -1
    ):
        raw.executemany(
            "UPDATE events SET payload = ? WHERE pos = ?",
            [(decode_payload(p, dicts), pos) for pos, p in rows if not isinstance(p, str)],
        )
    op.create_index("ix_events_terminal_kind_at", "events", ["terminal_id", "kind", "at"])

    op.create_table(
        "lots_old",
        sa.Column("lot_id", sa.String(110), primary_key=True),
        sa.Column("customer_id", sa.String(36), nullable=False),
        sa.Column("program", sa.String(64), nullable=False),
        sa.Column("earned_at", sa.String(40), nullable=False),
        sa.Column("expires_at", sa.String(40)),
        sa.Column("remaining", sa.Integer, nullable=False),
    )
    raw.executemany(
        "INSERT INTO lots_old (lot_id, customer_id, program, earned_at, expires_at, remaining) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                lot_text(lot, program),
                id_text(customer_id),
                program,
                time_value(earned).isoformat(),
                None if expires is None else time_value(expires).isoformat(),
                remaining,
            )
            for customer_id, program, lot, earned, expires, remaining in raw.execute(
                "SELECT customer_id, program, lot, earned_at, expires_at, remaining FROM lots"
            ).fetchall()
        ],
    )
    op.drop_table("lots")
    op.rename_table("lots_old", "lots")
    op.create_index("ix_lots_customer", "lots", ["customer_id"])

    op.create_table(
        "receipts_old",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("refunded", sa.Text, nullable=False),
        sa.Column("response", sa.LargeBinary, nullable=False),
    )

    def request_hash_of(event_id: str) -> str:
        (payload,) = raw.execute("SELECT payload FROM events WHERE id = ?", (event_id,)).fetchone()
        return str(json.loads(decode_payload(payload))["d"]["request_hash"])

    def old_answer(stored: Any) -> bytes:
        text = response_text(stored, dicts)
        if not text:
            return b""
        packer = zlib.compressobj(9, zdict=RESPONSE_ZDICT)
        return bytes(packer.compress(canonical(json.loads(text))) + packer.flush())

    raw.executemany(
        "INSERT INTO receipts_old (key, event_id, request_hash, refunded, response) "
        "VALUES (?, ?, ?, ?, ?)",
        [
            (key, event_id, request_hash_of(event_id), refunded, old_answer(response))
            for key, event_id, refunded, response in (
                (key, id_text(event_id), refunded, response)
                for key, event_id, refunded, response in raw.execute(
                    "SELECT key, event_id, refunded, response FROM receipts"
                ).fetchall()
            )
        ],
    )
    op.drop_table("receipts")
    op.rename_table("receipts_old", "receipts")
    op.drop_index("ix_redemptions_terminal_at", table_name="redemptions")
    op.drop_table("redemptions")
    op.drop_table("codec_dicts")
