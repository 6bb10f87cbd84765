"""Revision 0005_compact on a ledger written before it: every row converted, nothing else
changed, and the ledger answers exactly as it did.

``data/ledger_0003.sqlite`` was written by the code before 0005 (commit 545f5c4, by
``data/make_ledger_0003.py``): enrolments, sales with and without a card, redemptions, a
refund, an adjustment and expiries, with ``data/ledger_0003.json`` holding what that code
answered (look-ups, customer pages, the first answer of every receipt).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import select

from pos_loyalty.bootstrap import ledger_path
from pos_loyalty.config import load_settings
from pos_loyalty.domain.basket import Basket, BasketLine, Redemption
from pos_loyalty.domain.refund import RefundRequestLine
from pos_loyalty.ledger import schema
from pos_loyalty.ledger.store import MIGRATIONS, Ledger, make_engine
from pos_loyalty.ledger.verify import verify
from pos_loyalty.service import RefundRequest, SaleRequest, Service

DATA = Path(__file__).parent / "data"
EXPECTED: dict[str, Any] = json.loads((DATA / "ledger_0003.json").read_text())
NOW = datetime.fromisoformat(EXPECTED["now"])


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute(sql))
    finally:
        conn.close()


@pytest.fixture
def old_ledger(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.sqlite"
    shutil.copyfile(DATA / "ledger_0003.sqlite", path)
    assert rows(path, "SELECT version_num FROM alembic_version") == [("0003_sync",)]
    return path


def open_service(data_dir: Path) -> Service:
    settings = replace(load_settings(), data_dir=data_dir)
    return Service(settings, Ledger(ledger_path(settings), settings.terminal_id), lambda: NOW)


def plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def sale_request(receipt_id: str, raw: dict[str, Any]) -> SaleRequest:
    basket = Basket(
        tuple(BasketLine(sku, qty, price, cat) for sku, cat, qty, price in raw["lines"]),
        redeem=(Redemption("points", raw["redeem"]),) if raw["redeem"] else (),
    )
    return SaleRequest(basket, raw["card"], receipt_id, None, raw)


def test_an_old_ledger_is_converted_and_answers_as_before(old_ledger: Path) -> None:
    old_events = rows(
        old_ledger,
        "SELECT pos, id, terminal_id, seq, kind, at, customer_id, key, payload, "
        "prev_hash, hash FROM events ORDER BY pos",
    )
    old_lots = sorted(rows(old_ledger, "SELECT * FROM lots"))
    old_receipts = sorted(rows(old_ledger, "SELECT key, event_id, refunded FROM receipts"))
    old_other = {
        table: sorted(rows(old_ledger, f"SELECT * FROM {table}"))
        for table in ("heads", "customers", "cards", "balances", "usage", "coupons")
    }
    assert all(isinstance(r[8], str) for r in old_events)  # payloads as text

    service = open_service(old_ledger.parent)
    try:
        report = verify(service.ledger)
        assert report.ok, [str(p) for p in report.problems]
        assert report.events == len(old_events)
        with service.ledger.reader() as tx:
            # the same events, byte for byte once decoded (0006_events: ids, times and links
            # in stored forms, read back as their texts); payloads stored compressed
            new_events = [
                (*r[:9], tx.prev_hash(r.terminal_id, r.seq, r.prev_hash), r.hash)
                for r in tx.conn.execute(select(schema.events).order_by(schema.events.c.pos))
            ]
            assert [r[:8] + r[9:] for r in new_events] == [r[:8] + r[9:] for r in old_events]
            for old, new in zip(old_events, new_events, strict=True):
                assert isinstance(new[8], bytes)
                assert tx.payload_text(new[8]) == old[8]
            assert sum(len(r[8]) for r in new_events) < sum(len(r[8]) for r in old_events) / 2
            # the offline limits read the new projection: redeemed points
            assert (
                tx.redeemed_between("2025-01-09T00:00:00+00:00", "2025-01-10T00:00:00+00:00") == 30
            )
            assert (
                tx.redeemed_between("2025-01-26T00:00:00+00:00", "2025-01-27T00:00:00+00:00") == 20
            )
            assert (
                tx.redeemed_between("2025-01-06T00:00:00+00:00", "2026-01-01T00:00:00+00:00") == 50
            )
        for card in EXPECTED["cards"]:
            assert plain(service.lookup(card)) == EXPECTED["lookups"][card]
        for customer_id, page in EXPECTED["customers"].items():
            assert plain(service.customer(customer_id, limit=100)) == page
        # every receipt retried answers its first answer, and writes nothing
        for key, (raw, answer) in EXPECTED["answers"].items():
            kind, _, ident = key.partition(":")
            if kind == "sale":
                again = service.commit(sale_request(ident, raw))
            else:
                again = service.refund(
                    RefundRequest(ident, "R-3", (RefundRequestLine("cake", 1),), None, raw)
                )
            assert plain(again) == answer, key
        # lots: the same lots, decoded
        from pos_loyalty.ledger.codec import earned_value, expires_value, id_text, lot_text

        new_lots = sorted(
            (
                lot_text(lot, program),
                id_text(cid),
                program,
                earned_value(earned, lot).isoformat(),
                None
                if expires is None
                else expires_value(expires, earned_value(earned, lot)).isoformat(),  # type: ignore[union-attr]
                remaining,
            )
            for cid, program, lot, earned, expires, remaining in rows(
                old_ledger, "SELECT * FROM lots"
            )
        )
        assert new_lots == old_lots
        assert all(
            isinstance(r[0], bytes) and len(r[0]) == 16
            for r in rows(old_ledger, "SELECT customer_id FROM lots")
        )
        new_receipts = sorted(
            (key, id_text(event_id), refunded)
            for key, event_id, refunded in rows(
                old_ledger, "SELECT key, event_id, refunded FROM receipts"
            )
        )
        assert new_receipts == old_receipts
        for table, before in old_other.items():
            assert sorted(rows(old_ledger, f"SELECT * FROM {table}")) == before, table
        assert rows(old_ledger, "SELECT count(*) FROM events") == [(len(old_events),)]
    finally:
        service.ledger.close()
    indexes = {
        name for (name,) in rows(old_ledger, "SELECT name FROM sqlite_master WHERE type = 'index'")
    }
    assert "ix_events_terminal_kind_at" not in indexes
    assert "ix_lots_customer" not in indexes


def test_new_sales_on_a_converted_ledger_verify_and_can_be_refunded(old_ledger: Path) -> None:
    service = open_service(old_ledger.parent)
    try:
        card = EXPECTED["cards"][1]
        raw = {"card": card, "lines": [["cake", "bakery", 2, 500]], "redeem": 0}
        first = service.commit(sale_request("R-90", raw))
        assert service.commit(sale_request("R-90", raw)) == first
        spend = {"card": card, "lines": [["bun", "bakery", 1, 180]], "redeem": 5}
        service.commit(sale_request("R-91", spend))
        with service.ledger.reader() as tx:
            assert (
                tx.redeemed_between("2026-03-01T00:00:00+00:00", "2026-03-02T00:00:00+00:00") == 5
            )
        service.refund(
            RefundRequest("F-90", "R-90", (RefundRequestLine("cake", 1),), None, {"f": 90})
        )
        service.refund(RefundRequest("F-91", "R-1", None, None, {"f": 91}))
        report = verify(service.ledger)
        assert report.ok, [str(p) for p in report.problems]
    finally:
        service.ledger.close()


def test_downgrade_restores_the_old_forms_and_upgrade_converts_again(old_ledger: Path) -> None:
    old_events = rows(old_ledger, "SELECT * FROM events ORDER BY pos")
    old_lots = sorted(rows(old_ledger, "SELECT * FROM lots"))
    old_receipts = sorted(
        rows(old_ledger, "SELECT key, event_id, request_hash, refunded FROM receipts")
    )
    Ledger(old_ledger, "till-1").close()  # upgrade to head
    engine = make_engine(old_ledger)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0004_bootstrap")
    finally:
        engine.dispose()
    assert rows(old_ledger, "SELECT * FROM events ORDER BY pos") == old_events
    assert sorted(rows(old_ledger, "SELECT * FROM lots")) == old_lots
    assert (
        sorted(rows(old_ledger, "SELECT key, event_id, request_hash, refunded FROM receipts"))
        == old_receipts
    )
    service = open_service(old_ledger.parent)  # and up again
    try:
        assert verify(service.ledger).ok
        for card in EXPECTED["cards"]:
            assert plain(service.lookup(card)) == EXPECTED["lookups"][card]
    finally:
        service.ledger.close()
