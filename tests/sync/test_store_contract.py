"""Contract tests of the server store: the same tests on SQLite and on real PostgreSQL."""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text, update

from pos_loyalty.domain.events import Event, Kind, Posting, Unit
from pos_loyalty.domain.ids import expiry_event_id, lot_id, uuid7
from pos_loyalty.ledger.codec import chain_hash, payload_of
from pos_loyalty.ledger.replication import Answer, Replica, StoredEvent, Stub
from pos_loyalty.ledger.store import Ledger
from pos_loyalty.ledger.verify import verify
from sync.client import _stored, _wire
from sync.protocol import ChainStub, PushRequest, Status, WireEvent
from sync.server import schema as server_schema
from sync.server.store import ServerStore, SyncError, TillAuth

from .helpers import at_once

AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def till_ledger(tmp_path: Path, terminal: str) -> Ledger:
    return Ledger(tmp_path / f"{terminal}.sqlite", terminal)


def credit(terminal: str, customer: str, points: int) -> Event:
    return Event(
        uuid7(),
        Kind.ACCOUNT_ADJUSTED,
        terminal,
        AT,
        customer,
        postings=(Posting("points", Unit.POINTS, points),),
        data={"reason": "test"},
    )


def expiry(terminal: str, lot: str, amount: int) -> Event:
    """A points expiry of customer c1's ``lot``, with the id derived from the lot."""
    return Event(
        expiry_event_id(lot),
        Kind.POINTS_EXPIRED,
        terminal,
        AT,
        "c1",
        postings=(Posting("points", Unit.POINTS, -amount, lot=lot),),
        data={"lot": lot},
    )


def append(ledger: Ledger, events: list[Event]) -> list[StoredEvent]:
    with ledger.transaction() as tx:
        tx.append(events)
    return Replica(ledger).unsynced(10_000)


def push(store: ServerStore, auth: TillAuth, events: list[StoredEvent]) -> list[Status]:
    request = PushRequest(
        terminal_id=auth.terminal_id,
        events=[WireEvent.model_validate(_wire(e)) for e in events],
    )
    return [r.status for r in store.ingest(auth, request).results]


def auth_for(store: ServerStore, terminal: str, merchant: str = "m1") -> TillAuth:
    token = store.create_pairing_token(terminal, merchant, f"{merchant}-s1")
    auth, credential = store.pair(token)
    assert store.authenticate(credential) == auth
    return auth


def test_ingest_dedups_resends_and_assigns_gapless_server_seq(
    store: ServerStore, tmp_path: Path
) -> None:
    ledger = till_ledger(tmp_path, "t1")
    auth = auth_for(store, "t1")
    events = append(ledger, [credit("t1", "c1", 10), credit("t1", "c1", 5)])
    assert push(store, auth, events) == [Status.ACCEPTED, Status.ACCEPTED]
    assert push(store, auth, events) == [Status.DUPLICATE, Status.DUPLICATE]
    more = append(ledger, [credit("t1", "c1", 1)])
    assert push(store, auth, more) == [Status.DUPLICATE, Status.DUPLICATE, Status.ACCEPTED]
    assert store.balances("m1") == {("c1", "points", "points"): 16}
    page = store.pull(auth_for(store, "t2"), None, 100)
    assert [p.server_seq for p in page.events] == [1, 2, 3]
    ledger.close()


def test_same_id_different_hash_is_refused_loudly(store: ServerStore, tmp_path: Path) -> None:
    a, b = till_ledger(tmp_path, "t1"), till_ledger(tmp_path, "t2")
    auth_a, auth_b = auth_for(store, "t1"), auth_for(store, "t2")
    ev = credit("t1", "c1", 10)
    push(store, auth_a, append(a, [ev]))
    forged = append(
        b, [replace(ev, terminal_id="t2", postings=(Posting("points", Unit.POINTS, 99),))]
    )
    assert push(store, auth_b, forged) == [Status.CONFLICT]
    assert [c["reason"] for c in store.conflicts()] == ["id_reused"]
    # The answer lost, the batch sent again: the same answer, nothing recorded twice.
    request = PushRequest(terminal_id="t2", events=[WireEvent.model_validate(_wire(forged[0]))])
    (again,) = store.ingest(auth_b, request).results
    assert (again.status, again.reason) == (Status.CONFLICT, "id_reused")
    assert [c["reason"] for c in store.conflicts()] == ["id_reused"]
    assert store.balances("m1") == {("c1", "points", "points"): 10}


def test_a_reused_id_inside_an_ordinary_batch_is_answered_as_a_look_up_would(
    store: ServerStore, tmp_path: Path
) -> None:
    """A new event's id is not looked up first (only resends and expiries are): a stored
    one is found by the events table's key, and the batch is stored again with every id
    looked up. The answers, the positions and the balances are as if it had been."""
    a, b = till_ledger(tmp_path, "t1"), till_ledger(tmp_path, "t2")
    auth_a, auth_b = auth_for(store, "t1"), auth_for(store, "t2")
    taken = credit("t1", "c1", 10)
    push(store, auth_a, append(a, [taken]))
    batch = [credit("t2", "c2", 1), credit("t2", "c2", 2)]
    batch.append(replace(taken, terminal_id="t2", postings=(Posting("points", Unit.POINTS, 7),)))
    batch += [credit("t2", "c3", 3), credit("t2", "c2", 4)]
    statuses = push(store, auth_b, append(b, batch))
    assert statuses == [Status.ACCEPTED] * 2 + [Status.CONFLICT] + [Status.ACCEPTED] * 2
    assert [(c["reason"], c["seq"]) for c in store.conflicts()] == [("id_reused", 3)]
    assert store.balances("m1") == {
        ("c1", "points", "points"): 10,
        ("c2", "points", "points"): 7,
        ("c3", "points", "points"): 3,
    }
    pulled = store.pull(auth_for(store, "reader"), None, 100).events
    assert [p.server_seq for p in pulled] == [1, 2, 3, 5, 6]  # 4: the quarantined slot
    assert [p.event.id for p in pulled] == [taken.id] + [
        e.id for i, e in enumerate(batch) if i != 2
    ]


def test_a_stored_payload_with_an_extra_key_is_still_pulled(
    store: ServerStore, tmp_path: Path
) -> None:
    """A server of an older release accepted a payload with a key besides ``p`` and ``d``
    (the hash covers only those two). Tills pulling it apply it and move on, as before;
    only ``ledger verify`` names it (tests/ledger/test_tamper.py)."""
    a = till_ledger(tmp_path, "t1")
    events = append(a, [credit("t1", "c1", 10), credit("t1", "c1", 5)])
    push(store, auth_for(store, "t1"), events)
    body = json.loads(events[0].payload)
    body["x"] = 1
    with store.engine.begin() as conn:
        conn.execute(
            update(server_schema.events)
            .where(server_schema.events.c.id == events[0].id)
            .values(payload=json.dumps(body, sort_keys=True, separators=(",", ":")))
        )
    page = store.pull(auth_for(store, "t2"), None, 100)
    replica = Replica(till_ledger(tmp_path, "t2"))
    applied = replica.apply_pulled((_stored(p.event) for p in page.events), [], page.cursor)
    assert applied.applied == 2
    assert replica.state().cursor == page.cursor


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_the_same_expiry_pushed_by_two_tills_at_once_counts_once(
    store: ServerStore, tmp_path: Path
) -> None:
    """Both pushes miss the expiry in the id look-up (neither has committed) and wait in
    the fold on the customer's balance row; the second's events key then refuses the row,
    and its batch is stored again with every id looked up: superseded, answered duplicate.
    (Before the retry, the second push failed with a server error and had to be resent.)"""
    a, b = till_ledger(tmp_path, "t1"), till_ledger(tmp_path, "t2")
    auth_a, auth_b = auth_for(store, "t1"), auth_for(store, "t2")
    push(store, auth_a, append(a, [credit("t1", "c1", 10)]))
    lot = lot_id(uuid7(), "points")

    batches = {
        "t1": append(a, [expiry("t1", lot, 4)])[-1:],
        "t2": append(b, [expiry("t2", lot, 6)]),
    }
    answers: dict[str, object] = {}
    blocker = store.engine.connect()  # holds the balance row until both pushes wait on it
    held = blocker.begin()
    blocker.execute(text("SELECT * FROM balances WHERE customer_id = 'c1' FOR UPDATE")).all()

    def run(terminal: str, auth: TillAuth) -> None:
        try:
            answers[terminal] = push(store, auth, batches[terminal])
        except BaseException as exc:  # noqa: BLE001 - compared below
            answers[terminal] = exc

    threads = [
        threading.Thread(target=run, args=("t1", auth_a)),
        threading.Thread(target=run, args=("t2", auth_b)),
    ]
    for th in threads:
        th.start()
    time.sleep(1.0)
    held.rollback()
    blocker.close()
    for th in threads:
        th.join(30)
    assert sorted(map(str, answers.values())) == sorted(
        [str([Status.ACCEPTED]), str([Status.DUPLICATE])]
    ), answers
    winner = 4 if answers["t1"] == [Status.ACCEPTED] else 6
    assert store.balances("m1") == {("c1", "points", "points"): 10 - winner}


def test_gap_is_refused_with_the_servers_head(store: ServerStore, tmp_path: Path) -> None:
    ledger = till_ledger(tmp_path, "t1")
    auth = auth_for(store, "t1")
    events = append(ledger, [credit("t1", "c1", 1) for _ in range(3)])
    with pytest.raises(SyncError) as info:
        push(store, auth, events[1:])
    assert info.value.code == "sequence_gap" and info.value.extra["head"]["seq"] == 0
    assert store.count("events") == 0


def restored_till(store: ServerStore, tmp_path: Path) -> tuple[Ledger, TillAuth]:
    """Till t1 pushed seq 1 (1 point) and seq 2 (10 points), then was restored from a backup
    taken after seq 1: its ledger (to append to) and its credentials."""
    import shutil

    path = tmp_path / "t1.sqlite"
    ledger = Ledger(path, "t1")
    auth = auth_for(store, "t1")
    push(store, auth, append(ledger, [credit("t1", "c1", 1)]))
    ledger.close()
    shutil.copy(path, tmp_path / "backup.sqlite")
    ledger = Ledger(path, "t1")
    push(store, auth, append(ledger, [credit("t1", "c1", 10)]))  # seq 2, then lost
    ledger.close()
    return Ledger(tmp_path / "backup.sqlite", "t1"), auth


def test_restored_till_starts_a_new_epoch_without_overwriting(
    store: ServerStore, tmp_path: Path
) -> None:
    restored, auth = restored_till(store, tmp_path)
    replayed = append(restored, [credit("t1", "c1", 100), credit("t1", "c1", 1000)])
    statuses = push(store, auth, replayed)
    assert statuses == [Status.DUPLICATE, Status.CONFLICT, Status.ACCEPTED]
    reasons = [c["reason"] for c in store.conflicts()]
    assert reasons == ["new_epoch", "seq_reused_after_restore"]
    # Sent again (the answer lost): answered as the first time, nothing recorded twice.
    assert push(store, auth, replayed) == [Status.DUPLICATE, Status.CONFLICT, Status.DUPLICATE]
    assert [c["reason"] for c in store.conflicts()] == reasons
    # The acknowledged seq 2 (10 points) stands; the re-used seq 2 is quarantined, not counted.
    assert store.balances("m1") == {("c1", "points", "points"): 1011}
    restored.close()


def test_an_id_sent_twice_in_a_batch_keeps_every_position_distinct(
    store: ServerStore, tmp_path: Path
) -> None:
    """A (hostile or broken) till sends event id X first at a re-used seq (quarantined) and
    then again at a free seq (accepted): the stored event takes its accepted slot's position,
    not the quarantined slot's, so no two slots share a position."""
    restored, auth = restored_till(store, tmp_path)
    replayed = append(restored, [credit("t1", "c1", 100)])  # seq 1 again, a new seq 2: X
    restored.close()
    x = replayed[-1]
    again = replace(credit("t1", "c1", 5), id=x.id, seq=3)  # X once more, at seq 3
    third = {
        **_wire(x),
        "seq": 3,
        "at": again.at.isoformat(),
        "payload": payload_of(again),
        "prev_hash": x.hash.hex(),
        "hash": chain_hash(x.hash, again).hex(),
    }
    request = PushRequest(
        terminal_id="t1",
        events=[*(WireEvent.model_validate(_wire(e)) for e in replayed), WireEvent(**third)],
    )
    answer = store.ingest(auth, request)
    assert [r.status for r in answer.results] == [
        Status.DUPLICATE,
        Status.CONFLICT,
        Status.ACCEPTED,
    ]
    with store.engine.connect() as conn:
        positions = [
            r[0]
            for r in conn.exec_driver_sql(
                "SELECT server_seq FROM events UNION ALL SELECT server_seq FROM chain"
            )
        ]
    assert sorted(positions) == [1, 2, 3, 4]
    assert answer.results[2].server_seq == 4
    page = store.pull(auth_for(store, "t2"), None, 100)
    assert [(e.server_seq, e.event.seq) for e in page.events] == [(1, 1), (2, 2), (4, 3)]
    assert [s.seq for s in page.stubs] == [2]


def test_expiry_decided_twice_counts_once_and_the_loser_books_the_difference(
    store: ServerStore, tmp_path: Path
) -> None:
    a, b = till_ledger(tmp_path, "t1"), till_ledger(tmp_path, "t2")
    auth_a, auth_b = auth_for(store, "t1"), auth_for(store, "t2")
    earn = credit("t1", "c1", 100)
    push(store, auth_a, append(a, [earn]))
    rb = Replica(b)
    page = store.pull(auth_b, None, 100)
    rb.apply_pulled([StoredEvent(**{**_fields(p.event)}) for p in page.events], [], page.cursor)
    lot = f"{earn.id}/points"

    push(store, auth_a, append(a, [expiry("t1", lot, 100)])[-1:])
    sent = append(b, [expiry("t2", lot, 70)])
    request = PushRequest(terminal_id="t2", events=[WireEvent.model_validate(_wire(sent[-1]))])
    answer = store.ingest(auth_b, request)
    result = answer.results[0]
    assert result.status is Status.DUPLICATE and result.winner_payload is not None
    # The answer lost, the batch sent again: answered the same, so the till still books it.
    again = store.ingest(auth_b, request).results[0]
    assert (again.status, again.reason, again.message, again.winner_payload) == (
        result.status,
        "expiry_decided_elsewhere",
        result.message,
        result.winner_payload,
    )
    booked = rb.record_answers(
        sent[-1:],
        [
            Answer(
                result.id,
                result.seq,
                result.status.value,
                result.reason,
                None,
                result.winner_payload,
            )
        ],
        answer.head.epoch,
    )
    assert [p.delta for p in booked[0].postings] == [-30]
    pushed = rb.unsynced(10)
    assert push(store, auth_b, pushed) == [Status.ACCEPTED]  # local-only, checked
    assert store.balances("m1") == {("c1", "points", "points"): 0}
    with b.reader() as tx:
        assert tx.state("c1").account("points").balance == 0
    # A third till sees till t2's chain through stubs; its ledger verifies.
    c = till_ledger(tmp_path, "t3")
    page = store.pull(auth_for(store, "t3"), None, 100)
    assert len(page.stubs) == 2
    Replica(c).apply_pulled(
        [StoredEvent(**_fields(p.event)) for p in page.events],
        [_stub(s) for s in page.stubs],
        page.cursor,
    )
    assert verify(c).ok, verify(c).problems
    assert verify(b).ok, verify(b).problems


def test_concurrent_ingest_never_lets_a_reader_skip(store: ServerStore, tmp_path: Path) -> None:
    tills = [f"t{i}" for i in range(4)]
    auths = {t: auth_for(store, t) for t in tills}
    batches = {
        t: append(till_ledger(tmp_path, t), [credit(t, f"c-{t}", 1) for _ in range(30)])
        for t in tills
    }
    reader = auth_for(store, "reader")
    seen: list[int] = []
    cursor: list[str | None] = [None]
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            page = store.pull(reader, cursor[0], 1000)
            seen.extend(p.server_seq for p in page.events)
            cursor[0] = page.cursor

    def write(t: str) -> None:
        for i in range(0, 30, 3):
            push(store, auths[t], batches[t][i : i + 3])

    threads = [threading.Thread(target=write, args=(t,)) for t in tills]
    r = threading.Thread(target=read)
    r.start()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    stop.set()
    r.join()
    page = store.pull(reader, cursor[0], 1000)
    seen.extend(p.server_seq for p in page.events)
    assert seen == list(range(1, 121))


def test_concurrent_pushes_sharing_customers_add_up_and_flag_in_server_order(
    store: ServerStore, tmp_path: Path
) -> None:
    """Tills pushing at once for the same customers (a push folds its balances before it
    takes the merchant's lock): every balance is the sum of all postings, and the overdrafts
    flagged are exactly those a replay of the events in server order finds, in that order."""
    rng = random.Random(7)
    tills = [f"t{i}" for i in range(4)]
    customers = [f"c{i}" for i in range(5)]
    auths = {t: auth_for(store, t) for t in tills}
    batches: dict[str, list[StoredEvent]] = {}
    for t in tills:
        events = []
        for n in range(60):
            customer = rng.choice(customers)
            if rng.random() < 0.45:  # a sale that redeems points
                receipt = f"{t}-{n}"
                events.append(
                    Event(
                        uuid7(),
                        Kind.SALE_COMMITTED,
                        t,
                        AT,
                        customer,
                        key=receipt,
                        postings=(Posting("points", Unit.POINTS, -rng.randint(1, 9)),),
                        data={"receipt_id": receipt},
                    )
                )
            else:
                events.append(credit(t, customer, rng.randint(1, 6)))
        batches[t] = append(till_ledger(tmp_path, t), events)

    def write(t: str) -> None:
        for i in range(0, 60, 4):
            assert set(push(store, auths[t], batches[t][i : i + 4])) == {Status.ACCEPTED}

    at_once(write, tills)
    pulled = store.pull(auth_for(store, "reader"), None, 1000).events
    assert [p.server_seq for p in pulled] == list(range(1, 241))
    balances: dict[tuple[str, str, str], int] = {}
    flagged: list[str] = []
    for p in pulled:
        for posting in json.loads(p.event.payload)["p"]:
            key = (str(p.event.customer_id), posting["program"], posting["unit"])
            balances[key] = balances.get(key, 0) + posting["delta"]
            if balances[key] < 0 and posting["delta"] < 0 and p.event.kind == "sale.committed":
                flagged.append(p.event.id)
    assert store.balances("m1") == balances
    # Listed (by id) in server order too: the rows are written under the merchant's lock.
    assert [o["event_id"] for o in store.overdrafts("m1")] == flagged
    assert flagged  # the run does overdraw (else the flags were not tested)


def _fields(w: WireEvent) -> dict[str, Any]:
    d = w.model_dump()
    d["prev_hash"] = bytes.fromhex(d["prev_hash"])
    d["hash"] = bytes.fromhex(d["hash"])
    return d


def _stub(s: ChainStub) -> Stub:
    return Stub(s.terminal_id, s.seq, s.id, bytes.fromhex(s.prev_hash), bytes.fromhex(s.hash))


def test_ingest_json_is_the_push_response(store: ServerStore, tmp_path: Path) -> None:
    """The HTTP path's answer (encoded without the model) is exactly what ``PushResponse``
    serialises to: every field present, statuses and server positions as ``ingest`` gives."""
    import json

    from sync.protocol import PushResponse

    auth = auth_for(store, "json-till")
    ledger = till_ledger(tmp_path, "json-till")
    sent = append(ledger, [credit("json-till", "c1", 5), credit("json-till", "c2", 7)])
    request = PushRequest(
        terminal_id="json-till", events=[WireEvent.model_validate(_wire(e)) for e in sent]
    )
    raw = store.ingest_json(auth, request)
    answer = PushResponse.model_validate_json(raw)
    assert json.loads(raw) == answer.model_dump(mode="json")
    assert [r.status for r in answer.results] == [Status.ACCEPTED, Status.ACCEPTED]
    assert all(r.server_seq for r in answer.results) and answer.head.seq == sent[-1].seq
    again = store.ingest(auth, request)  # a resend: the model path answers the same shape
    assert [r.status for r in again.results] == [Status.DUPLICATE, Status.DUPLICATE]
    assert json.loads(store.ingest_json(auth, request)) == again.model_dump(mode="json")
    ledger.close()
