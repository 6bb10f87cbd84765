"""Wallet money spent and paid out, next to the points redeemed: the offline limits count it.

``redemptions`` gets a ``wallet`` column (minor units): a sale paying from a cashback wallet
and a wallet payout now have a row too (``points`` 0 when none were redeemed), so the
offline limits bound wallet money as they bound points (DESIGN invariant 8). Rows for the
events already in the ledger are added here, exactly as ``projections.apply_side_tables``
adds them (a sale only when its receipt is held here). Downgrade also drops the receipts of
request ids (payouts, adjustments, coupons issued by a till), which came with this revision.

Revision ID: 0008_wallet_limits
Revises: 0007_stub_slots
"""

from __future__ import annotations

import json
import sqlite3
from typing import cast

import sqlalchemy as sa
from alembic import op

from pos_loyalty.ledger.codec import Dictionaries, at_text, decode_payload, id_text, kind_key

revision = "0008_wallet_limits"
down_revision = "0007_stub_slots"

BATCH = 5000


def _raw() -> sqlite3.Connection:
    return cast(sqlite3.Connection, op.get_bind().connection.driver_connection)


def upgrade() -> None:
    op.add_column(
        "redemptions", sa.Column("wallet", sa.Integer, nullable=False, server_default="0")
    )
    raw = _raw()

    def load(ident: int) -> tuple[str, bytes] | None:
        row = raw.execute(
            "SELECT purpose, zdict FROM codec_dicts WHERE id = ?", (ident,)
        ).fetchone()
        return None if row is None else (str(row[0]), bytes(row[1]))

    dicts = Dictionaries(loader=load)
    sale, payout = kind_key("sale.committed"), kind_key("wallet.paid_out")
    # Kinds that carry a request id (``projections.REQUEST_KEYS``): receipts per till.
    requests = {
        payout: "payout",
        kind_key("account.adjusted"): "adjustment",
        kind_key("coupon.issued"): "coupon-issue",
    }
    last = -1
    while rows := raw.execute(
        "SELECT pos, id, terminal_id, kind, at, customer_id, payload FROM events "
        f"WHERE pos > ? AND kind IN (?, ?, ?, ?) ORDER BY pos LIMIT {BATCH}",
        (last, sale, *requests),
    ).fetchall():
        last = rows[-1][0]
        for _, event_id, terminal_id, kind, at, customer_id, payload in rows:
            body = json.loads(decode_payload(payload, dicts))
            request_id = body["d"].get("request_id") if kind in requests else None
            if request_id:  # none before this revision; back after a downgrade
                raw.execute(
                    "INSERT OR IGNORE INTO receipts (key, event_id, refunded, response) "
                    "VALUES (?, ?, '{}', ?)",
                    (f"{requests[kind]}:{terminal_id}:{request_id}", event_id, b""),
                )
            if kind not in (sale, payout):
                continue
            if kind == sale:
                # Only a sale whose receipt is held here (by key: the primary key).
                held = raw.execute(
                    "SELECT event_id FROM receipts WHERE key = ?",
                    (f"sale:{body['d'].get('receipt_id')}",),
                ).fetchone()
                if held is None or held[0] != event_id:
                    continue
            postings = body["p"]
            wallet = -sum(
                int(p["delta"]) for p in postings if p["unit"] == "money" and int(p["delta"]) < 0
            )
            if not wallet:
                continue
            updated = raw.execute(
                "UPDATE redemptions SET wallet = ? WHERE event_id = ?", (wallet, event_id)
            )
            if updated.rowcount == 0:
                raw.execute(
                    "INSERT INTO redemptions (event_id, terminal_id, at, customer_id, points, "
                    "wallet) VALUES (?, ?, ?, ?, 0, ?)",
                    (
                        event_id,
                        terminal_id,
                        at_text(at),
                        None if customer_id is None else id_text(customer_id),
                        wallet,
                    ),
                )


def downgrade() -> None:
    op.execute("DELETE FROM redemptions WHERE points = 0")
    op.drop_column("redemptions", "wallet")
    # Receipts of request ids (payouts, adjustments, coupons issued), which the code of
    # earlier revisions neither writes nor rebuilds.
    op.execute(
        "DELETE FROM receipts WHERE key LIKE 'payout:%' OR key LIKE 'adjustment:%' "
        "OR key LIKE 'coupon-issue:%'"
    )
