"""The till's by-key reads (plain SQL on the DB-API connection) answer what the tables hold."""

from __future__ import annotations

from pathlib import Path

from pos_loyalty.ledger import projections
from pos_loyalty.ledger.store import Ledger


def test_open_coupons_usage_and_rows(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite", "till-1")
    try:
        with ledger.transaction() as tx:
            rows = [  # serial, program, customer, code, issued_at, expires_at
                ("s2", "p", "c1", "B", "2026-01-02T00:00:00+00:00", "2026-02-01T00:00:00+00:00"),
                ("s1", "p", "c1", "A", "2026-01-02T00:00:00+00:00", "2026-02-01T00:00:00+00:00"),
                ("s0", "q", "c1", "Z", "2026-01-03T00:00:00+00:00", "2026-02-02T00:00:00+00:00"),
                ("s9", "p", "c1", "U", "2026-01-01T00:00:00+00:00", "2026-02-01T00:00:00+00:00"),
                ("s8", "p", "c2", "X", "2026-01-01T00:00:00+00:00", "2026-02-01T00:00:00+00:00"),
            ]
            tx.raw.executemany("INSERT INTO coupons VALUES (?, ?, ?, ?, ?, ?)", rows)
            tx.raw.executemany(
                "INSERT INTO usage (key, count) VALUES (?, ?)",
                [("coupon:s9", 1), ("promo:x", 3)],
            )
            tx.raw.execute("INSERT INTO customers VALUES ('c1', '2026-01-01', '{}')")
            tx.raw.execute(
                "INSERT INTO cards VALUES ('2900000000017', 'c1', 'blocked', '2026-01-01', 'lost')"
            )
        with ledger.reader() as tx:
            open_ = projections.open_coupons(tx.conn, "c1")
            assert [c["serial"] for c in open_] == ["s1", "s2", "s0"]  # issued_at, then serial
            assert open_[0] == {
                "serial": "s1",
                "program": "p",
                "code": "A",
                "expires_at": "2026-02-01T00:00:00+00:00",
            }
            assert projections.open_coupons(tx.conn, "nobody") == []
            usage = projections.usage_counts(tx.conn, ["promo:x", "coupon:s9", "promo:none"])
            assert usage == {"promo:x": 3, "coupon:s9": 1}
            assert projections.usage_counts(tx.conn, []) == {}
            card = tx.card("2900000000017")
            assert card is not None
            assert (card.customer_id, card.status, card.reason) == ("c1", "blocked", "lost")
            assert tx.card("2900000000025") is None
            customer = tx.customer("c1")
            assert customer is not None and customer.profile == "{}"
            assert tx.customer("c2") is None
            assert tx.receipt("sale:none") is None
            assert not tx.has_event("nope")
            assert tx.head() == (0, bytes(32))
    finally:
        ledger.close()
