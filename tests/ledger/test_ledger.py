"""The SQLite ledger: durability settings, ids, sequence, hash chain, migrations, bad files."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from pos_loyalty import cli
from pos_loyalty.bootstrap import ledger_path
from pos_loyalty.config import load_settings
from pos_loyalty.domain.basket import Basket, BasketLine, Redemption
from pos_loyalty.domain.errors import DomainError
from pos_loyalty.domain.ids import expiry_event_id, lot_id, uuid7
from pos_loyalty.domain.refund import RefundRequestLine
from pos_loyalty.ledger.codec import at_text, id_text, kind_text
from pos_loyalty.ledger.store import MIGRATIONS, Ledger, LedgerError
from pos_loyalty.ledger.verify import verify
from pos_loyalty.service import Profile, RefundRequest, SaleRequest, Service

T0 = datetime(2025, 1, 6, 9, tzinfo=UTC)
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def open_service(data_dir: Path) -> Service:
    settings = replace(load_settings(), data_dir=data_dir)
    return Service(settings, Ledger(ledger_path(settings), settings.terminal_id), lambda: NOW)


def sale(
    service: Service,
    receipt_id: str,
    card: str | None,
    at: datetime,
    *lines: tuple[str, str, int, int],
    redeem: int = 0,
) -> dict[str, Any]:
    basket = Basket(
        tuple(BasketLine(sku, qty, price, cat) for sku, cat, qty, price in lines),
        redeem=(Redemption("points", redeem),) if redeem else (),
    )
    raw = {"card": card, "lines": [list(x) for x in lines], "redeem": redeem, "at": str(at)}
    return service.commit(SaleRequest(basket, card, receipt_id, at, raw))


def busy_ledger(data_dir: Path) -> tuple[Service, str]:
    """A ledger with enrolments, sales, a refund, an adjustment and an expiry."""
    service = open_service(data_dir)
    card = service.enrol(Profile(name="Ada"), at=T0)["card"]["code"]
    service.enrol(Profile(name="Ben"), at=T0)
    sale(service, "R-1", card, T0 + timedelta(hours=1), ("espresso", "coffee", 2, 320))
    sale(service, "R-2", None, T0 + timedelta(hours=2), ("bun", "bakery", 1, 180))
    sale(
        service,
        "R-3",
        card,
        T0 + timedelta(days=2),
        ("cake", "bakery", 2, 1000),
        redeem=30,
    )
    service.refund(
        RefundRequest(
            "F-1",
            "R-3",
            (RefundRequestLine("cake", 1),),
            T0 + timedelta(days=3),
            {"refund": "F-1"},
        )
    )
    customer_id = service.lookup(card, T0 + timedelta(days=3))["customer"]["id"]
    service.adjust(customer_id, "points", 5, "goodwill", T0 + timedelta(days=4))
    # a year and more later: the welcome lot and the first sale's lot expire
    sale(service, "R-4", card, T0 + timedelta(days=400), ("latte", "coffee", 1, 450))
    return service, card


def rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute(sql, args))
    finally:
        conn.close()


def payload_text(path: Path, stored: bytes) -> str:
    """A stored ``events.payload`` (compressed, ``codec``) as the canonical JSON text."""
    assert isinstance(stored, bytes) and stored[:1] == b"\x01", stored
    ledger = Ledger(path, "till-1")
    try:
        with ledger.reader() as tx:
            return tx.payload_text(stored)
    finally:
        ledger.close()


# --------------------------------------------------------------------------- durability


def test_wal_and_synchronous_full_are_in_force(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite", "till-1")
    try:
        with ledger.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        with ledger.transaction() as tx:  # and on the connection a commit writes through
            assert tx.conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert tx.conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
    finally:
        ledger.close()
    # WAL is a property of the file: a plain sqlite3 connection sees it too
    assert rows(tmp_path / "ledger.sqlite", "PRAGMA journal_mode") == [("wal",)]


# --------------------------------------------------------------------------- ids, seq, chain


def test_uuid7_layout() -> None:
    ms = 1_767_225_600_123
    value = uuid.UUID(uuid7(ms))
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert value.int >> 80 == ms
    ids = {uuid7() for _ in range(10_000)}
    assert len(ids) == 10_000


def test_event_ids_are_uuid7_and_unique(tmp_path: Path) -> None:
    service, _ = busy_ledger(tmp_path)
    service.ledger.close()
    found = rows(tmp_path / "ledger.sqlite", "SELECT id, kind, payload FROM events ORDER BY pos")
    assert len(found) >= 10
    assert len({r[0] for r in found}) == len(found)
    expiries = 0
    for stored_id, stored_kind, payload in found:
        assert isinstance(stored_id, bytes) and len(stored_id) == 16  # stored as 16 bytes
        event_id, kind = id_text(stored_id), kind_text(stored_kind)
        version = uuid.UUID(event_id).version
        if kind == "points.expired":
            # derived from the lot, so two tills expiring it make the same event
            lot = json.loads(payload_text(tmp_path / "ledger.sqlite", payload))["d"]["lot"]
            assert event_id == expiry_event_id(lot)
            assert version == 5
            expiries += 1
        else:
            assert version == 7, (kind, event_id)
    assert expiries >= 1


def test_expiry_event_id_is_derived_from_the_lot() -> None:
    lot = lot_id("0190f0aa-0000-7000-8000-000000000000", "points")
    assert expiry_event_id(lot) == expiry_event_id(lot)
    assert expiry_event_id(lot) != expiry_event_id(lot_id(uuid7(), "points"))


def test_sequence_is_gap_free_from_one(tmp_path: Path) -> None:
    service, _ = busy_ledger(tmp_path)
    service.ledger.close()
    seqs = rows(tmp_path / "ledger.sqlite", "SELECT terminal_id, seq FROM events ORDER BY pos")
    assert {t for t, _ in seqs} == {"till-1"}
    assert [s for _, s in seqs] == list(range(1, len(seqs) + 1))


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_hash_chain_links_every_event(tmp_path: Path) -> None:
    service, _ = busy_ledger(tmp_path)
    service.ledger.close()
    found = rows(
        tmp_path / "ledger.sqlite",
        "SELECT id, terminal_id, seq, kind, at, customer_id, key, payload, prev_hash, hash "
        "FROM events ORDER BY pos",
    )
    prev = bytes(32)
    sizes = [0, 0]  # stored payload bytes, canonical JSON bytes
    for (
        stored_id,
        till,
        seq,
        kind,
        stored_at,
        stored_customer,
        key,
        payload,
        prev_hash,
        digest,
    ) in found:
        # The first event's link is stored; every later one is implied by the row before
        # (NULL, 0006_events). Ids as 16 bytes, UTC times as integer microseconds.
        assert prev_hash == (prev if seq == 1 else None)
        assert isinstance(stored_id, bytes) and isinstance(stored_at, int)
        event_id, at, kind = id_text(stored_id), at_text(stored_at), kind_text(kind)
        customer = None if stored_customer is None else id_text(stored_customer)
        text = payload_text(tmp_path / "ledger.sqlite", payload)
        sizes[0] += len(payload)
        sizes[1] += len(text.encode())
        p = json.loads(text)
        body = {
            "id": event_id,
            "kind": kind,
            "terminal_id": till,
            "at": at,
            "customer_id": customer,
            "key": key,
            "postings": p["p"],
            "data": p["d"],
            "seq": seq,
        }
        assert digest == hashlib.sha256(prev + _canonical(body)).digest()
        prev = digest
    assert sizes[0] < sizes[1] / 2  # stored compressed; hashed as the text
    assert rows(tmp_path / "ledger.sqlite", "SELECT terminal_id, seq, hash FROM heads") == [
        ("till-1", len(found), prev)
    ]


def test_a_healthy_ledger_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    service, _ = busy_ledger(tmp_path)
    report = verify(service.ledger)
    assert report.ok, [str(p) for p in report.problems]
    assert report.terminals == 1
    service.ledger.close()
    assert cli.main(["--data-dir", str(tmp_path), "ledger", "verify"]) == 0
    assert "ledger OK" in capsys.readouterr().out


# --------------------------------------------------------------------------- one transaction


def test_a_receipt_is_written_once(tmp_path: Path) -> None:
    service = open_service(tmp_path)
    card = service.enrol(Profile(), at=T0)["card"]["code"]
    first = sale(service, "R-1", card, T0, ("espresso", "coffee", 1, 320))
    count = len(rows(tmp_path / "ledger.sqlite", "SELECT id FROM events"))
    assert sale(service, "R-1", card, T0, ("espresso", "coffee", 1, 320)) == first
    with pytest.raises(DomainError) as info:
        sale(service, "R-1", card, T0, ("espresso", "coffee", 2, 320))
    assert info.value.code == "receipt_conflict"
    assert len(rows(tmp_path / "ledger.sqlite", "SELECT id FROM events")) == count
    service.ledger.close()


def test_a_commit_with_due_expiries_writes_them_in_the_same_transaction(tmp_path: Path) -> None:
    service = open_service(tmp_path)
    card = service.enrol(Profile(), at=T0)["card"]["code"]
    out = sale(service, "R-1", card, T0 + timedelta(days=366), ("cake", "bakery", 1, 500))
    assert out["balances"]["points"]["balance"] == 5  # the 50 welcome points are gone
    service.ledger.close()
    kinds = rows(tmp_path / "ledger.sqlite", "SELECT kind, seq, key FROM events ORDER BY pos")
    assert [kind_text(k) for k, _, _ in kinds] == [
        "customer.enrolled",
        "card.issued",
        "points.expired",
        "sale.committed",
    ]


# --------------------------------------------------------------------------- migrations


def _schema(path: Path) -> list[tuple[Any, ...]]:
    return rows(path, "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name")


def test_migration_creates_the_schema_and_reopening_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "ledger.sqlite"
    Ledger(path, "till-1").close()
    tables = {name for kind, name, _, _ in _schema(path) if kind == "table"}
    assert {
        "events",
        "heads",
        "customers",
        "cards",
        "balances",
        "lots",
        "receipts",
        "alembic_version",
    } <= tables
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert rows(path, "SELECT version_num FROM alembic_version") == [(head,)]

    service = open_service(path.parent)
    service.enrol(Profile(), at=T0)
    service.ledger.close()
    before_schema = _schema(path)
    before_events = rows(path, "SELECT * FROM events ORDER BY pos")
    assert len(before_events) == 2
    for _ in range(2):
        Ledger(path, "till-1").close()
    assert _schema(path) == before_schema
    assert rows(path, "SELECT version_num FROM alembic_version") == [(head,)]
    assert rows(path, "SELECT * FROM events ORDER BY pos") == before_events


# --------------------------------------------------------------------------- bad files


@pytest.mark.parametrize(
    "garbage",
    [
        b"this is not a database, it is a shopping list\n" * 100,
        bytes(range(256)) * 16,
        b"SQLite format 3\x00" + b"\xff" * 4080,  # a valid magic, then junk
    ],
    ids=["text", "binary", "bad-header"],
)
def test_a_file_that_is_not_a_ledger_is_refused_and_left_alone(
    tmp_path: Path, garbage: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(garbage)
    with pytest.raises(LedgerError) as info:
        Ledger(path, "till-1")
    message = str(info.value)
    assert str(path) in message
    assert "not a usable ledger" in message
    assert "\n" not in message
    assert path.read_bytes() == garbage
    # the CLI says so in one line, exit 1, no traceback
    assert cli.main(["--data-dir", str(tmp_path), "ledger", "verify"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pos-loyalty: ledger error: ")
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert path.read_bytes() == garbage


# --------------------------------------------------------------------------- stored forms


def test_dictionaries_trained_by_one_process_are_read_by_another(tmp_path: Path) -> None:
    """A till trains its compression dictionaries at its 512th event (``codec``); a second
    ``Ledger`` on the same file opened before that (the sync process) still reads the rows
    written with them, and new rows it writes verify."""
    service = open_service(tmp_path)
    other = Ledger(tmp_path / "ledger.sqlite", "till-1")  # opened before any training
    try:
        card = service.enrol(Profile(), at=T0)["card"]["code"]
        for n in range(515):
            sale(service, f"R-{n}", card, T0 + timedelta(minutes=n), ("espresso", "coffee", 1, 320))
        trained = rows(tmp_path / "ledger.sqlite", "SELECT id, purpose FROM codec_dicts")
        assert sorted(p for _, p in trained) == ["payload", "response"]
        ident = next(i for i, p in trained if p == "payload")
        newest = rows(tmp_path / "ledger.sqlite", "SELECT payload FROM events ORDER BY pos DESC")[
            0
        ][0]
        assert newest[1] == ident  # written with the trained dictionary
        report = verify(other)
        assert report.ok, [str(p) for p in report.problems]
        with other.reader() as tx:
            assert tx.receipt("sale:R-514") is not None
            assert tx.receipt("sale:R-514").response == sale(  # type: ignore[union-attr]
                service, "R-514", card, T0 + timedelta(minutes=514), ("espresso", "coffee", 1, 320)
            )
    finally:
        other.close()
        service.ledger.close()
