"""A till checks what it pulls before applying it: every event's hash must be the chain hash
of its content, and chain to the same till's event before it where this till holds that one.
A page with an event that fails is refused whole: nothing applied, the cursor stays, the
till's ledger still verifies, and a later correct page applies as usual."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Connection, select, update

from pos_loyalty.cli import main
from pos_loyalty.domain.events import Kind
from pos_loyalty.ledger.codec import chain_hash, event_from_row
from pos_loyalty.ledger.verify import verify
from pos_loyalty.service import Profile
from sync.client import SyncFailed
from sync.server import schema as server_schema
from sync.server.store import ServerStore

from .conftest import LiveServer, Till
from .helpers import event_ids, nonzero, pair_till, sale, sync_round, till_balances

EVENTS = server_schema.events


def _newest_sale(conn: Connection, terminal_id: str) -> tuple[str, str, bytes, bytes]:
    row = conn.execute(
        select(EVENTS.c.id, EVENTS.c.payload, EVENTS.c.prev_hash, EVENTS.c.hash)
        .where(EVENTS.c.terminal_id == terminal_id, EVENTS.c.kind == Kind.SALE_COMMITTED.value)
        .order_by(EVENTS.c.seq.desc())
        .limit(1)
    ).one()
    return row.id, row.payload, bytes(row.prev_hash), bytes(row.hash)


@contextmanager
def _changed_on_server(store: ServerStore, event_id: str, **values: object) -> Iterator[None]:
    """The server's stored row of ``event_id`` with ``values`` in place (as a damaged or
    forged server would serve it), put back afterwards."""
    with store.engine.begin() as conn:
        before = conn.execute(select(EVENTS).where(EVENTS.c.id == event_id)).one()
        conn.execute(update(EVENTS).where(EVENTS.c.id == event_id).values(**values))
    try:
        yield
    finally:
        with store.engine.begin() as conn:
            conn.execute(
                update(EVENTS)
                .where(EVENTS.c.id == event_id)
                .values({k: getattr(before, k) for k in values})
            )


def _two_tills(
    store: ServerStore, live_server: LiveServer, make_till: Callable[..., Till]
) -> tuple[Till, Till, str]:
    a, b = make_till("till-a"), make_till("till-b")
    for till in (a, b):
        pair_till(store, till, live_server.url)
    card = a.service.enrol(Profile(name="Eve"))["card"]["code"]
    sale(a.service, card, "A-1", price=5000)
    assert sync_round(a).accepted > 0
    return a, b, card


def _backed_up(till: Till, make_till: Callable[..., Till], backup: Path) -> Till:
    """``till`` after its ledger file was copied to ``backup`` (closed, then opened again)."""
    till.service.ledger.close()
    shutil.copy(till.service.ledger.path, backup)
    return make_till(till.terminal_id)


def _restored(till: Till, make_till: Callable[..., Till], backup: Path) -> Till:
    """``till`` restored from ``backup``: its ledger file replaced, as after a disk loss."""
    till.service.ledger.close()
    shutil.copy(backup, till.service.ledger.path)
    for suffix in ("-wal", "-shm"):
        Path(str(till.service.ledger.path) + suffix).unlink(missing_ok=True)
    return make_till(till.terminal_id)


def _refused(till: Till) -> SyncFailed:
    with pytest.raises(SyncFailed) as caught:
        sync_round(till)
    assert caught.value.code == "pulled_event_refused"
    assert caught.value.reachable
    return caught.value


def test_an_event_whose_content_was_changed_on_the_server_is_refused(
    store: ServerStore, live_server: LiveServer, make_till: Callable[..., Till]
) -> None:
    a, b, _ = _two_tills(store, live_server, make_till)
    with store.engine.connect() as conn:
        sale_id, payload, _, _ = _newest_sale(conn, a.terminal_id)
    body = json.loads(payload)
    body["p"][0]["delta"] += 1000  # a richer sale than the till recorded
    forged = json.dumps(body, separators=(",", ":"), sort_keys=True)

    with _changed_on_server(store, sale_id, payload=forged):
        exc = _refused(b)
        assert f"event {sale_id} (till {a.terminal_id}, seq " in str(exc)
        assert "hash does not match its content" in str(exc)
        assert "nothing from that page was applied" in str(exc)
        # The enrolment before the sale, in the same page, was not applied either.
        assert event_ids(b) == set()
        assert b.replica.state().cursor is None
        assert till_balances(b) == {}
        assert verify(b.service.ledger).ok
        # The till sells on, and its own events still reach the server (push comes first).
        b.service.enrol(Profile(name="Bob"))
        _refused(b)
        assert event_ids(b) and event_ids(b) <= set(store.event_ids("m1"))

    # Served as recorded again: the next round applies everything.
    sync_round(b)
    sync_round(a)
    assert event_ids(a) == event_ids(b) == set(store.event_ids("m1"))
    assert nonzero(till_balances(b)) == nonzero(till_balances(a)) == nonzero(store.balances("m1"))
    assert verify(b.service.ledger).ok


def test_a_payload_that_is_not_json_is_refused(
    store: ServerStore, live_server: LiveServer, make_till: Callable[..., Till]
) -> None:
    a, b, _ = _two_tills(store, live_server, make_till)
    with store.engine.connect() as conn:
        sale_id = _newest_sale(conn, a.terminal_id)[0]
    with _changed_on_server(store, sale_id, payload="{not json"):
        exc = _refused(b)
        assert f"event {sale_id}" in str(exc) and "does not decode" in str(exc)
        assert event_ids(b).isdisjoint(event_ids(a))
    sync_round(b)
    assert event_ids(a) <= event_ids(b)


def test_an_event_rehashed_onto_another_chain_is_refused(
    store: ServerStore, live_server: LiveServer, make_till: Callable[..., Till]
) -> None:
    """Content and hash agree, but the event no longer follows the one before it that till B
    already holds (a server that rewrote a till's history)."""
    a, b, card = _two_tills(store, live_server, make_till)
    sync_round(b)  # B holds A's events so far
    sale(a.service, card, "A-2", price=2000)
    sync_round(a)
    with store.engine.connect() as conn:
        sale_id = _newest_sale(conn, a.terminal_id)[0]
        row = conn.execute(select(EVENTS).where(EVENTS.c.id == sale_id)).one()
    other = bytes([0x11]) * 32
    rehashed = chain_hash(other, event_from_row(row))

    with _changed_on_server(store, sale_id, prev_hash=other, hash=rehashed):
        exc = _refused(b)
        assert f"event {sale_id}" in str(exc)
        assert "does not chain to the event before it" in str(exc)
        assert sale_id not in event_ids(b)
        assert verify(b.service.ledger).ok

    sync_round(b)
    assert sale_id in event_ids(b)
    assert nonzero(till_balances(b)) == nonzero(till_balances(a))
    assert verify(b.service.ledger).ok


def test_sync_once_names_the_refused_event_in_one_line(
    store: ServerStore,
    live_server: LiveServer,
    make_till: Callable[..., Till],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pos_loyalty.config import load_settings

    # Paired before there are events: pairing a till to a server that has some bootstraps
    # it from a snapshot, and this test is about the pull.
    data = tmp_path / "cli-till"
    terminal = load_settings(None, data_dir=data).terminal_id
    token = store.create_pairing_token(terminal, "m1", "s1")
    base = ["--data-dir", str(data)]
    assert main([*base, "pair", "--server", live_server.url, "--token", token]) == 0
    capsys.readouterr()
    a, _, _ = _two_tills(store, live_server, make_till)
    with store.engine.connect() as conn:
        sale_id, payload, _, _ = _newest_sale(conn, a.terminal_id)
    with _changed_on_server(store, sale_id, payload=payload.replace('"delta":', '"delta":9')):
        assert main([*base, "sync", "--once"]) == 1
        out = capsys.readouterr()
        assert out.out == ""
        assert out.err.count("\n") == 1
        assert out.err.startswith("pos-loyalty: sync failed: the server sent event ")
        assert sale_id in out.err and "Traceback" not in out.err
    assert main([*base, "sync", "--once"]) == 0


def test_a_restored_tills_new_epoch_is_pulled_and_verifies_everywhere(
    store: ServerStore,
    live_server: LiveServer,
    make_till: Callable[..., Till],
    tmp_path: Path,
) -> None:
    """Till A is restored from a backup after its later sales reached the server and till B:
    A's chain forks (a new epoch). The server quarantines A's re-used seqs and serves them as
    stubs; B (and a till paired afterwards, C) apply A's new events, which follow the
    quarantined slot, not the event B holds at that seq, and every ledger still verifies."""
    a, b, card = _two_tills(store, live_server, make_till)
    sync_round(b)
    backup = tmp_path / "a-backup.sqlite"
    a = _backed_up(a, make_till, backup)
    sale(a.service, card, "A-lost", price=3000)  # reaches the server and B, then is lost
    sync_round(a)
    sync_round(b)
    a = _restored(a, make_till, backup)

    sale(a.service, card, "A-again", price=1000)  # the re-used seq: quarantined
    sale(a.service, card, "A-new", price=2000)  # a new seq, after the quarantined one
    sync_round(a)
    assert "seq_reused_after_restore" in {c["reason"] for c in store.conflicts()}
    applied = sync_round(b).pulled.applied
    assert applied == 1  # A-new; A-again is a stub
    c = make_till("till-c")
    pair_till(store, c, live_server.url)
    sync_round(c)
    sync_round(a)
    for till in (a, b, c):
        report = verify(till.service.ledger)
        assert report.ok, (till.terminal_id, report.problems)
    assert nonzero(till_balances(b)) == nonzero(store.balances("m1"))
    assert nonzero(till_balances(c)) == nonzero(store.balances("m1"))


def test_a_first_event_that_follows_another_is_refused(
    store: ServerStore, live_server: LiveServer, make_till: Callable[..., Till]
) -> None:
    """A chain's seq 1 follows nothing: one served with another ``prev_hash`` (and a hash
    that matches it) would make this till's `ledger verify` fail for ever."""
    a, b, _ = _two_tills(store, live_server, make_till)
    with store.engine.connect() as conn:
        row = conn.execute(
            select(EVENTS).where(EVENTS.c.terminal_id == a.terminal_id, EVENTS.c.seq == 1)
        ).one()
    other = bytes([0x22]) * 32
    with _changed_on_server(
        store, row.id, prev_hash=other, hash=chain_hash(other, event_from_row(row))
    ):
        exc = _refused(b)
        assert f"event {row.id} (till {a.terminal_id}, seq 1)" in str(exc)
        assert "a first event that follows another" in str(exc)
        assert event_ids(b) == set()
    sync_round(b)
    assert verify(b.service.ledger).ok


def test_a_refused_page_does_not_hold_back_the_program_configuration(
    store: ServerStore, live_server: LiveServer, make_till: Callable[..., Till]
) -> None:
    from .test_program_config import FIVE_PER_EURO, TillSync

    a, b, _ = _two_tills(store, live_server, make_till)
    with store.engine.connect() as conn:
        sale_id = _newest_sale(conn, a.terminal_id)[0]
    store.set_program_config("m1", FIVE_PER_EURO)
    sync = TillSync(b)
    try:
        with _changed_on_server(store, sale_id, payload="{not json"):
            with pytest.raises(SyncFailed) as refused:
                sync.round()
            assert refused.value.code == "pulled_event_refused"
            assert b.service.programs_version == 1
    finally:
        sync.close()


def test_a_till_bootstrapped_before_the_fork_verifies_after_it(
    store: ServerStore,
    live_server: LiveServer,
    make_till: Callable[..., Till],
    tmp_path: Path,
) -> None:
    """C bootstraps while the server's head for A is a sale A then loses in a restore: A's
    new events follow a quarantined slot right after C's baseline, where C holds nothing."""
    from sync.bootstrap import bootstrap

    a, _, card = _two_tills(store, live_server, make_till)
    backup = tmp_path / "a-backup.sqlite"
    a = _backed_up(a, make_till, backup)
    sale(a.service, card, "A-lost", price=3000)
    sync_round(a)
    c = make_till("till-c")
    pair_till(store, c, live_server.url)
    creds = c.replica.credentials()
    assert creds is not None
    bootstrap(c.replica, creds)
    a = _restored(a, make_till, backup)
    sale(a.service, card, "A-again", price=1000)
    sale(a.service, card, "A-new", price=2000)
    sync_round(a)
    sync_round(c)
    report = verify(c.service.ledger)
    assert report.ok, report.problems
    assert nonzero(till_balances(c)) == nonzero(store.balances("m1"))
