"""Compact ``events`` rows (ids, kinds, times in stored forms, implied links), lot times,
``balances`` without rowid.

- ``events.id`` and ``events.customer_id``: a UUID as its 16 bytes (``codec.id_key``; any
  other id as its text), in the row and in both indexes (``id`` unique,
  ``ix_events_customer``, which now leaves out events without a customer).
- ``events.kind``: a small integer (``codec.kind_key``).
- ``events.at``: the ISO text of a UTC time as integer microseconds (``codec.at_key``; any
  other text as it is). All read back as the exact texts through SQLAlchemy
  (``schema.EventId``, ``EventKind``, ``EventAt``).
- ``events.prev_hash``: NULL where it is the ``hash`` of the same till's event ``seq - 1``
  in this table (a till's own chain: every row but its first), which readers put back
  (``store.Tx.prev_hash``, or the row before); kept where the previous link is not a row
  here (a till's first event, a bootstrapped till's first after its baseline, a pulled
  event after a stub).
- ``lots.earned_at`` as microseconds after the lot's crediting event id's UUIDv7 time and
  ``lots.expires_at`` as its distance from ``earned_at`` (``codec.earned_key``,
  ``expires_key``): small integers instead of two 8-byte ones.
- ``balances`` WITHOUT ROWID: its primary key is the table, no second b-tree.

``events`` is rebuilt (SQLite cannot change a column's declared type: a TEXT column would
turn the integer times back into text); ``pos`` values, every event's content and every
hash are unchanged.

Revision ID: 0006_events
Revises: 0005_compact
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any, cast

from alembic import op

from pos_loyalty.ledger.codec import (
    at_key,
    at_text,
    earned_key,
    earned_value,
    expires_key,
    expires_value,
    id_key,
    id_text,
    kind_key,
    kind_text,
    time_key,
    time_value,
)

revision = "0006_events"
down_revision = "0005_compact"

BATCH = 5000

_COLUMNS = "pos, id, terminal_id, seq, kind, at, customer_id, key, payload, prev_hash, hash"


def _create(raw: sqlite3.Connection, name: str, *, compact: bool) -> None:
    """The ``events`` table (as ``name``), in the forms of 0006 or of 0005."""
    ident, kind, at = ("BLOB",) * 3 if compact else ("VARCHAR(36)", "VARCHAR(32)", "VARCHAR(40)")
    raw.execute(
        f"CREATE TABLE {name} (\n"
        "\tpos INTEGER NOT NULL, \n"
        f"\tid {ident} NOT NULL, \n"
        "\tterminal_id VARCHAR(64) NOT NULL, \n"
        "\tseq INTEGER NOT NULL, \n"
        f"\tkind {kind} NOT NULL, \n"
        f"\tat {at} NOT NULL, \n"
        f"\tcustomer_id {ident}, \n"
        '\t"key" VARCHAR(128), \n'
        "\tpayload TEXT NOT NULL, \n"
        f"\tprev_hash BLOB{'' if compact else ' NOT NULL'}, \n"
        "\thash BLOB NOT NULL, \n"
        "\tPRIMARY KEY (pos), \n"
        "\tCONSTRAINT uq_events_terminal_seq UNIQUE (terminal_id, seq), \n"
        "\tUNIQUE (id)\n)"
    )


def _rows(raw: sqlite3.Connection, table: str) -> Iterator[list[tuple[Any, ...]]]:
    last = -1
    while rows := raw.execute(
        f"SELECT {_COLUMNS} FROM {table} WHERE pos > ? ORDER BY pos LIMIT {BATCH}", (last,)
    ).fetchall():
        yield rows
        last = rows[-1][0]


def _raw() -> sqlite3.Connection:
    return cast(sqlite3.Connection, op.get_bind().connection.driver_connection)


def _copy(compact: bool) -> None:
    raw = _raw()
    raw.execute("DROP INDEX IF EXISTS ix_events_customer")
    raw.execute("ALTER TABLE events RENAME TO events_old")
    _create(raw, "events", compact=compact)
    insert = f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    # Each till's newest (seq, hash) seen in ``pos`` order: the link a row's prev_hash names.
    last: dict[str, tuple[int, bytes]] = {}

    def previous(terminal_id: str, seq: int) -> bytes | None:
        known = last.get(terminal_id)
        if known is not None and known[0] == seq - 1:
            return known[1]
        row = raw.execute(
            "SELECT hash FROM events_old WHERE terminal_id = ? AND seq = ?", (terminal_id, seq - 1)
        ).fetchone()
        return None if row is None else bytes(row[0])

    for rows in _rows(raw, "events_old"):
        out = []
        for pos, ident, terminal_id, seq, kind, at, customer, key, payload, prev, digest in rows:
            if compact:
                implied = previous(terminal_id, seq)
                out.append(
                    (
                        pos,
                        id_key(ident),
                        terminal_id,
                        seq,
                        kind_key(kind),
                        at_key(at),
                        None if customer is None else id_key(customer),
                        key,
                        payload,
                        None if implied is not None and bytes(prev) == implied else prev,
                        digest,
                    )
                )
            else:
                out.append(
                    (
                        pos,
                        id_text(ident),
                        terminal_id,
                        seq,
                        kind_text(kind),
                        at_text(at),
                        None if customer is None else id_text(customer),
                        key,
                        payload,
                        previous(terminal_id, seq) if prev is None else prev,
                        digest,
                    )
                )
            last[terminal_id] = (seq, bytes(digest))
        raw.executemany(insert, out)
    raw.execute("DROP TABLE events_old")
    raw.execute(
        "CREATE INDEX ix_events_customer ON events (customer_id, pos)"
        + (" WHERE customer_id IS NOT NULL" if compact else "")
    )


def _lots(compact: bool) -> None:
    raw = _raw()
    last: tuple[Any, ...] = (b"", "", b"")
    while rows := raw.execute(
        "SELECT customer_id, program, lot, earned_at, expires_at FROM lots "
        f"WHERE (customer_id, program, lot) > (?, ?, ?) ORDER BY customer_id, program, lot "
        f"LIMIT {BATCH}",
        last,
    ).fetchall():
        out = []
        for customer, program, lot, earned_at, expires_at in rows:
            if compact:  # 0005: both times as time_key
                earned = time_value(earned_at)
                expires = None if expires_at is None else time_value(expires_at)
                new = (earned_key(earned, lot), expires_key(expires, earned))
            else:
                earned = earned_value(earned_at, lot)
                expires = expires_value(expires_at, earned)
                new = (time_key(earned), None if expires is None else time_key(expires))
            out.append((*new, customer, program, lot))
        raw.executemany(
            "UPDATE lots SET earned_at = ?, expires_at = ? "
            "WHERE customer_id = ? AND program = ? AND lot = ?",
            out,
        )
        last = rows[-1][:3]


def _balances(compact: bool) -> None:
    """``balances`` WITHOUT ROWID (its primary key the one b-tree), or back."""
    raw = _raw()
    raw.execute("ALTER TABLE balances RENAME TO balances_old")
    raw.execute(
        "CREATE TABLE balances (\n"
        "\tcustomer_id VARCHAR(36) NOT NULL, \n"
        "\tprogram VARCHAR(64) NOT NULL, \n"
        "\tunit VARCHAR(8) NOT NULL, \n"
        "\tbalance INTEGER NOT NULL, \n"
        "\tPRIMARY KEY (customer_id, program, unit)\n)" + ("\n WITHOUT ROWID" if compact else "")
    )
    raw.execute(
        "INSERT INTO balances (customer_id, program, unit, balance) "
        "SELECT customer_id, program, unit, balance FROM balances_old"
    )
    raw.execute("DROP TABLE balances_old")


def upgrade() -> None:
    _copy(compact=True)
    _lots(compact=True)
    _balances(compact=True)


def downgrade() -> None:
    """Back to the forms of 0005: texts, every ``prev_hash`` written out, lot times as
    ``time_key``, ``balances`` with a rowid."""
    _balances(compact=False)
    _lots(compact=False)
    _copy(compact=False)
