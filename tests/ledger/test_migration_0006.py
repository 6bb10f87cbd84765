"""Revision 0006_events on a ledger written by the code of 0005_compact: every row converted,
every event and hash unchanged, and the ledger answers exactly as it did.

``data/ledger_0005.sqlite.gz`` was written by the code of commit 30f50b1 (by
``data/make_ledger_0005.py``): 682 events, so its payloads and answers are stored with the
built-in and with trained dictionaries; sales with and without a card, redemptions, a
refund, an adjustment and expiries, with ``data/ledger_0005.json`` holding what that code
answered (look-ups, customer pages, a sample of first answers).
"""

from __future__ import annotations

import gzip
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
from pos_loyalty.domain.refund import RefundRequestLine
from pos_loyalty.ledger import schema
from pos_loyalty.ledger.codec import (
    STORED_DEFLATE,
    Dictionaries,
    earned_value,
    expires_value,
    response_text,
    time_value,
)
from pos_loyalty.ledger.store import MIGRATIONS, Ledger, make_engine
from pos_loyalty.ledger.verify import verify
from pos_loyalty.service import RefundRequest, Service

from .test_migration import plain, sale_request

DATA = Path(__file__).parent / "data"
EXPECTED: dict[str, Any] = json.loads((DATA / "ledger_0005.json").read_text())
NOW = datetime.fromisoformat(EXPECTED["now"])
EVENT_COLUMNS = "pos, id, terminal_id, seq, kind, at, customer_id, key, payload, prev_hash, hash"


def rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute(sql, args))
    finally:
        conn.close()


@pytest.fixture
def old_ledger(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.sqlite"
    with gzip.open(DATA / "ledger_0005.sqlite.gz") as src, path.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    assert rows(path, "SELECT version_num FROM alembic_version") == [("0005_compact",)]
    return path


def open_service(data_dir: Path) -> Service:
    settings = replace(load_settings(), data_dir=data_dir)
    return Service(settings, Ledger(ledger_path(settings), settings.terminal_id), lambda: NOW)


def dictionaries(path: Path) -> Dictionaries:
    dicts = Dictionaries()
    for ident, purpose, zdict in rows(path, "SELECT id, purpose, zdict FROM codec_dicts"):
        dicts.add(ident, purpose, zdict)
    return dicts


def old_answers(path: Path) -> dict[str, bytes]:
    """Every receipt's cached answer (canonical JSON) as the 0005 forms hold it."""
    dicts = dictionaries(path)
    return {
        key: response_text(r, dicts) for key, r in rows(path, "SELECT key, response FROM receipts")
    }


def old_lots(path: Path) -> list[tuple[Any, ...]]:
    return sorted(
        (
            cid,
            program,
            lot,
            time_value(earned).isoformat(),
            None if expires is None else time_value(expires).isoformat(),
            remaining,
        )
        for cid, program, lot, earned, expires, remaining in rows(path, "SELECT * FROM lots")
    )


def new_lots(path: Path) -> list[tuple[Any, ...]]:
    out = []
    for cid, program, lot, earned, expires, remaining in rows(path, "SELECT * FROM lots"):
        start = earned_value(earned, lot)
        end = expires_value(expires, start)
        out.append(
            (
                cid,
                program,
                lot,
                start.isoformat(),
                None if end is None else end.isoformat(),
                remaining,
            )
        )
    return sorted(out)


def test_a_0005_ledger_is_converted_and_answers_as_before(old_ledger: Path) -> None:
    old_events = rows(old_ledger, f"SELECT {EVENT_COLUMNS} FROM events ORDER BY pos")
    assert old_events[0][9] == bytes(32) and all(isinstance(r[1], str) for r in old_events)
    assert {r[8][1] for r in old_events} == {0, 1}  # payloads: built-in and trained dictionary
    answers = old_answers(old_ledger)
    assert sum(1 for a in answers.values() if a) > 500
    lots = old_lots(old_ledger)
    receipts = sorted(rows(old_ledger, "SELECT key, event_id, refunded FROM receipts"))
    other = {
        table: sorted(rows(old_ledger, f"SELECT * FROM {table}"))
        for table in ("heads", "customers", "cards", "balances", "usage", "coupons", "redemptions")
    }
    old_size = sum(
        n for (n,) in rows(old_ledger, "SELECT SUM(pgsize) FROM dbstat WHERE name != 'codec_dicts'")
    )

    service = open_service(old_ledger.parent)
    try:
        report = verify(service.ledger)
        assert report.ok, [str(p) for p in report.problems]
        assert report.events == len(old_events)
        with service.ledger.reader() as tx:
            # the same events, every column as before once read (payloads are untouched)
            new_events = [
                (*r[:9], tx.prev_hash(r.terminal_id, r.seq, r.prev_hash), r.hash)
                for r in tx.conn.execute(select(schema.events).order_by(schema.events.c.pos))
            ]
            assert new_events == old_events
            # every first answer reads back byte for byte
            for key, text in answers.items():
                receipt = tx.receipt(key)
                assert receipt is not None
                assert json.dumps(receipt.response, sort_keys=True, separators=(",", ":")) == (
                    text.decode() or "{}"
                ), key
        for card in EXPECTED["cards"]:
            assert plain(service.lookup(card)) == EXPECTED["lookups"][card]
        for customer_id, page in EXPECTED["customers"].items():
            assert plain(service.customer(customer_id, limit=10)) == page
        # retried receipts answer their first answer, and write nothing
        for key, (raw, answer) in EXPECTED["answers"].items():
            kind, _, ident = key.partition(":")
            if kind == "sale":
                again = service.commit(sale_request(ident, raw))
            else:
                again = service.refund(
                    RefundRequest(ident, "R-3", (RefundRequestLine("cake", 1),), None, raw)
                )
            assert plain(again) == answer, key
    finally:
        service.ledger.close()

    # the stored forms of 0006: ids as 16 bytes, kinds and UTC times as integers, links
    # implied after a till's first event, lot times relative; answers untouched
    stored = rows(old_ledger, f"SELECT {EVENT_COLUMNS} FROM events ORDER BY pos")
    assert all(isinstance(r[1], bytes) and len(r[1]) == 16 for r in stored)
    assert all(isinstance(r[4], int) and isinstance(r[5], int) for r in stored)
    assert [r[9] for r in stored] == [bytes(32)] + [None] * (len(stored) - 1)
    assert [r[10] for r in stored] == [r[10] for r in old_events]
    assert old_answers(old_ledger) == answers
    assert new_lots(old_ledger) == lots
    assert all(
        abs(e) < 2**31 for (e,) in rows(old_ledger, "SELECT expires_at FROM lots") if e is not None
    )
    assert sorted(rows(old_ledger, "SELECT key, event_id, refunded FROM receipts")) == receipts
    for table, before in other.items():
        now = f"SELECT * FROM {table}"
        if table == "redemptions":  # 0008 adds wallet money (and rows with no points)
            now = "SELECT event_id, terminal_id, at, customer_id, points FROM redemptions"
            now += " WHERE points > 0"
        assert sorted(rows(old_ledger, now)) == before, table
    conn = sqlite3.connect(old_ledger)
    conn.execute("VACUUM")
    conn.close()
    new_size = sum(
        n for (n,) in rows(old_ledger, "SELECT SUM(pgsize) FROM dbstat WHERE name != 'codec_dicts'")
    )
    assert new_size < old_size * 0.85, (new_size, old_size)


def test_new_sales_on_a_converted_ledger_verify_and_retry_exactly(old_ledger: Path) -> None:
    service = open_service(old_ledger.parent)
    try:
        card = EXPECTED["cards"][2]
        raw = {"card": card, "lines": [["cake", "bakery", 2, 500]], "redeem": 0}
        first = service.commit(sale_request("R-90", raw))
        assert service.commit(sale_request("R-90", raw)) == first
        spend = {"card": card, "lines": [["bun", "bakery", 1, 180]], "redeem": 5}
        paid = service.commit(sale_request("R-91", spend))
        assert service.commit(sale_request("R-91", spend)) == paid
        anonymous = {"card": None, "lines": [["bun", "bakery", 3, 180]], "redeem": 0}
        alone = service.commit(sale_request("R-92", anonymous))
        assert service.commit(sale_request("R-92", anonymous)) == alone
        service.refund(
            RefundRequest("F-90", "R-90", (RefundRequestLine("cake", 1),), None, {"f": 90})
        )
        report = verify(service.ledger)
        assert report.ok, [str(p) for p in report.problems]
    finally:
        service.ledger.close()
    newest = rows(old_ledger, "SELECT prev_hash FROM events ORDER BY pos DESC LIMIT 4")
    assert newest == [(None,)] * 4


def test_downgrade_to_0005_restores_its_forms_and_upgrade_converts_again(
    old_ledger: Path,
) -> None:
    old_events = rows(old_ledger, "SELECT * FROM events ORDER BY pos")
    answers = old_answers(old_ledger)
    lots = sorted(rows(old_ledger, "SELECT * FROM lots"))
    receipts = sorted(rows(old_ledger, "SELECT key, event_id, refunded FROM receipts"))
    Ledger(old_ledger, "till-1").close()  # upgrade to head
    engine = make_engine(old_ledger)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0005_compact")
    finally:
        engine.dispose()
    assert rows(old_ledger, "SELECT * FROM events ORDER BY pos") == old_events
    assert sorted(rows(old_ledger, "SELECT * FROM lots")) == lots
    assert sorted(rows(old_ledger, "SELECT key, event_id, refunded FROM receipts")) == receipts
    assert old_answers(old_ledger) == answers
    forms = {r[0][0] for r in rows(old_ledger, "SELECT response FROM receipts") if r[0]}
    assert forms == {STORED_DEFLATE}
    service = open_service(old_ledger.parent)  # and up again
    try:
        assert verify(service.ledger).ok
        for card in EXPECTED["cards"]:
            assert plain(service.lookup(card)) == EXPECTED["lookups"][card]
    finally:
        service.ledger.close()
