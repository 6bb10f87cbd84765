"""Tampering with the stored ledger (raw sqlite3, not the app) is found by ``ledger verify``."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pos_loyalty import cli
from pos_loyalty.bootstrap import ledger_path
from pos_loyalty.config import load_settings
from pos_loyalty.domain.basket import Basket, BasketLine
from pos_loyalty.ledger.codec import at_text, encode_payload, id_key, id_text, kind_text
from pos_loyalty.ledger.store import Ledger
from pos_loyalty.ledger.verify import Report, verify
from pos_loyalty.service import Profile, SaleRequest, Service

T0 = datetime(2026, 2, 2, 9, tzinfo=UTC)
NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A closed ledger with one customer and five sales."""
    settings = replace(load_settings(), data_dir=tmp_path)
    service = Service(settings, Ledger(ledger_path(settings), settings.terminal_id), lambda: NOW)
    card = service.enrol(Profile(name="Ada"), at=T0)["card"]["code"]
    for n in range(5):
        at = T0 + timedelta(hours=n + 1)
        basket = Basket((BasketLine("espresso", n + 1, 320, "coffee"),))
        service.commit(SaleRequest(basket, card, f"R-{n}", at, {"n": n}))
    assert verify(service.ledger).ok
    service.ledger.close()
    return tmp_path


def db(data_dir: Path) -> Path:
    return data_dir / "ledger.sqlite"


def execute(data_dir: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db(data_dir))
    try:
        with conn:
            return list(conn.execute(sql, args))
    finally:
        conn.close()


def sales(data_dir: Path) -> list[tuple[str, int, str]]:
    """(id, seq, payload text) of the sale events, in order."""
    return [
        (id_text(event_id), seq, text(data_dir, payload))
        for event_id, seq, payload in execute(
            data_dir,
            "SELECT id, seq, payload FROM events WHERE kind = 4 ORDER BY pos",
        )
    ]


def text(data_dir: Path, stored: bytes) -> str:
    """A stored payload (compressed, ``codec``) as its canonical JSON text."""
    ledger = Ledger(db(data_dir), "till-1")
    try:
        with ledger.reader() as tx:
            return tx.payload_text(stored)
    finally:
        ledger.close()


def stored(data_dir: Path, payload: str) -> bytes:
    """The stored form of a payload text, made as the ledger makes it (a real edit)."""
    ledger = Ledger(db(data_dir), "till-1")
    try:
        with ledger.reader() as tx:
            return encode_payload(payload, tx.dicts)
    finally:
        ledger.close()


def check(data_dir: Path) -> Report:
    ledger = Ledger(db(data_dir), "till-1")
    try:
        return verify(ledger)
    finally:
        ledger.close()


def cli_verify(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["--data-dir", str(data_dir), "ledger", "verify"])
    return code, capsys.readouterr().err


def edit_points(payload: str, factor: int) -> str:
    body = json.loads(payload)
    for posting in body["p"]:
        if posting["unit"] == "points":
            posting["delta"] *= factor
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def test_changing_an_events_amount_is_found_and_named(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event_id, seq, payload = sales(data_dir)[2]
    changed = edit_points(payload, 10)
    assert changed != payload
    execute(
        data_dir,
        "UPDATE events SET payload = ? WHERE id = ?",
        stored(data_dir, changed),
        id_key(event_id),
    )
    assert sales(data_dir)[2][2] == changed  # the stored row now reads as the edit
    report = check(data_dir)
    assert not report.ok
    problem = report.problems[0]
    assert problem.event_id == event_id
    assert problem.seq == seq
    assert "edited" in str(problem)
    code, err = cli_verify(data_dir, capsys)
    assert code == 1
    assert event_id in err
    assert err.startswith("pos-loyalty: ledger verify failed: ")


def test_an_edit_with_its_own_hash_recomputed_breaks_the_next_link(data_dir: Path) -> None:
    found = execute(
        data_dir,
        "SELECT id, seq, kind, at, customer_id, key, payload, prev_hash, hash FROM events "
        "ORDER BY pos",
    )
    index = next(i for i, r in enumerate(found) if kind_text(r[2]) == "sale.committed")
    stored_id, seq, kind, stored_at, stored_customer, key, payload, prev, _ = found[index]
    # Stored forms (0006_events): ids as 16 bytes, the time as microseconds, the link implied.
    event_id, at, customer = id_text(stored_id), at_text(stored_at), id_text(stored_customer)
    kind = kind_text(kind)
    assert prev is None
    prev = found[index - 1][8]
    changed = json.loads(edit_points(text(data_dir, payload), 3))
    body = {
        "id": event_id,
        "kind": kind,
        "terminal_id": "till-1",
        "at": at,
        "customer_id": customer,
        "key": key,
        "postings": changed["p"],
        "data": changed["d"],
        "seq": seq,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(prev + canonical.encode()).digest()
    execute(
        data_dir,
        "UPDATE events SET payload = ?, hash = ? WHERE id = ?",
        stored(data_dir, json.dumps(changed, sort_keys=True, separators=(",", ":"))),
        digest,
        stored_id,
    )
    report = check(data_dir)
    assert not report.ok
    assert report.problems[0].event_id == id_text(found[index + 1][0])
    assert "does not chain" in str(report.problems[0])


@pytest.mark.parametrize(
    ("column", "value"),
    [("at", "2026-02-01T09:00:00+00:00"), ("customer_id", "someone-else"), ("key", "R-99")],
)
def test_changing_any_column_of_an_event_is_found(data_dir: Path, column: str, value: str) -> None:
    event_id, _, _ = sales(data_dir)[1]
    execute(data_dir, f"UPDATE events SET {column} = ? WHERE id = ?", value, id_key(event_id))
    report = check(data_dir)
    assert not report.ok
    assert report.problems[0].event_id == event_id


def test_deleting_a_middle_event_names_the_gap(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = sales(data_dir)
    deleted_id, deleted_seq, _ = found[1]
    after_id, after_seq, _ = found[2]
    assert after_seq == deleted_seq + 1
    execute(data_dir, "DELETE FROM events WHERE id = ?", id_key(deleted_id))
    report = check(data_dir)
    assert not report.ok
    problem = report.problems[0]
    assert problem.event_id == after_id
    assert problem.seq == after_seq
    assert f"expected seq {deleted_seq}" in str(problem)
    assert "gap" in str(problem)
    code, err = cli_verify(data_dir, capsys)
    assert code == 1
    assert after_id in err and "gap" in err


def test_deleting_the_last_event_is_found_by_the_head(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = sales(data_dir)
    last_id, last_seq, _ = found[-1]
    before_id, before_seq, _ = found[-2]
    execute(data_dir, "DELETE FROM events WHERE id = ?", id_key(last_id))
    report = check(data_dir)
    assert not report.ok
    text = str(report.problems[0])
    assert "head" in text
    assert f"seq {last_seq}" in text
    assert report.problems[0].event_id == before_id  # where the chain now ends
    code, err = cli_verify(data_dir, capsys)
    assert code == 1
    assert "missing" in err


def _change_balance(data_dir: Path) -> tuple[str, int]:
    ((customer_id, balance),) = execute(
        data_dir, "SELECT customer_id, balance FROM balances WHERE program = 'points'"
    )
    execute(
        data_dir,
        "UPDATE balances SET balance = ? WHERE customer_id = ? AND program = 'points'",
        balance + 1000,
        customer_id,
    )
    return customer_id, balance


def test_a_changed_projection_is_found(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _change_balance(data_dir)
    report = check(data_dir)
    assert not report.ok
    assert "projection 'balances'" in str(report.problems[0])
    code, err = cli_verify(data_dir, capsys)
    assert code == 1
    assert "balances" in err


def test_ledger_rebuild_fixes_a_changed_projection(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    customer_id, balance = _change_balance(data_dir)
    assert cli.main(["--data-dir", str(data_dir), "ledger", "rebuild"]) == 0
    assert check(data_dir).ok
    code, err = cli_verify(data_dir, capsys)
    assert code == 0, err
    assert execute(
        data_dir,
        "SELECT balance FROM balances WHERE customer_id = ? AND program = 'points'",
        customer_id,
    ) == [(balance,)]


def test_a_deleted_event_cannot_be_hidden_behind_a_chain_stub(data_dir: Path) -> None:
    found = execute(
        data_dir,
        "SELECT id, seq, prev_hash, hash FROM events WHERE kind = 4 ORDER BY pos",
    )
    deleted_id, seq, prev_hash, digest = found[1]
    assert prev_hash is None and found[0][1] == seq - 1
    prev_hash = found[0][3]  # the implied link (0006_events): the hash of the row before
    after_id = id_text(found[2][0])
    execute(data_dir, "DELETE FROM events WHERE id = ?", deleted_id)
    execute(
        data_dir,
        "INSERT INTO chain_stubs (terminal_id, seq, event_id, prev_hash, hash) "
        "VALUES ('till-1', ?, ?, ?, ?)",
        seq,
        id_text(deleted_id),
        prev_hash,
        digest,
    )
    report = check(data_dir)
    assert not report.ok
    assert report.problems[0].event_id in (id_text(deleted_id), after_id), str(report.problems[0])


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE lots SET remaining = remaining + 7",
        "DELETE FROM cards",
        "UPDATE receipts SET refunded = '{\"0\": 1}' WHERE key = 'sale:R-1'",
    ],
    ids=["lots", "cards", "receipts"],
)
def test_other_projection_edits_are_found(data_dir: Path, sql: str) -> None:
    execute(data_dir, sql)
    report = check(data_dir)
    assert not report.ok
    assert "projection" in str(report.problems[0])


def test_damaged_stored_bytes_are_found_and_named(data_dir: Path) -> None:
    event_id, seq, _ = sales(data_dir)[3]
    key = id_key(event_id)
    ((payload,),) = execute(data_dir, "SELECT payload FROM events WHERE id = ?", key)
    damaged = bytearray(payload)
    damaged[len(damaged) // 2] ^= 0x55
    execute(data_dir, "UPDATE events SET payload = ? WHERE id = ?", bytes(damaged), key)
    report = check(data_dir)
    assert not report.ok
    assert report.problems[0].event_id == event_id
    assert report.problems[0].seq == seq


def test_an_edited_compression_dictionary_is_found(tmp_path: Path) -> None:
    """Past the till's 512th event, payloads use a dictionary trained from the ledger's own
    rows (``codec_dicts``): changing it changes what every later payload reads as."""
    settings = replace(load_settings(), data_dir=tmp_path)
    service = Service(settings, Ledger(ledger_path(settings), settings.terminal_id), lambda: NOW)
    card = service.enrol(Profile(name="Ada"), at=T0)["card"]["code"]
    for n in range(520):
        basket = Basket((BasketLine("espresso", 1 + n % 3, 320, "coffee"),))
        service.commit(SaleRequest(basket, card, f"R-{n}", T0 + timedelta(minutes=n), {"n": n}))
    assert verify(service.ledger).ok
    service.ledger.close()
    ((ident, zdict),) = execute(
        tmp_path, "SELECT id, zdict FROM codec_dicts WHERE purpose = 'payload'"
    )
    ((used,),) = execute(
        tmp_path, "SELECT count(*) FROM events WHERE substr(payload, 2, 1) = ?", bytes([ident])
    )
    assert used >= 8  # the events appended after the training use it
    edited = zdict.replace(b"espresso", b"ristrett")
    assert edited != zdict
    execute(tmp_path, "UPDATE codec_dicts SET zdict = ? WHERE id = ?", edited, ident)
    report = check(tmp_path)
    assert not report.ok
    assert "edited" in str(report.problems[0]) or "decoded" in str(report.problems[0])


def test_a_key_added_to_a_stored_payload_is_found(data_dir: Path) -> None:
    """The hash covers the payload's ``p`` and ``d`` only: an added key is content nothing
    vouches for, so ``verify`` names the event instead of reading past it."""
    event_id, seq, payload = sales(data_dir)[1]
    body = json.loads(payload)
    body["x"] = {"note": "added later"}
    changed = json.dumps(body, sort_keys=True, separators=(",", ":"))
    execute(
        data_dir,
        "UPDATE events SET payload = ? WHERE id = ?",
        stored(data_dir, changed),
        id_key(event_id),
    )
    report = check(data_dir)
    assert not report.ok
    problem = report.problems[0]
    assert (problem.event_id, problem.seq) == (event_id, seq)
    assert "cannot be decoded" in str(problem) and "'x'" in str(problem)
