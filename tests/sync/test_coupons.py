"""A single-use coupon redeemed at two tills while both were offline (invariant 8): the first
use the server ingests stands, the second is kept and counted but recorded as a conflict an
operator can list; nothing is dropped, and every balance still converges."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pos_loyalty.domain.basket import Basket, BasketLine
from pos_loyalty.ledger.replication import Answer
from pos_loyalty.ledger.verify import verify
from pos_loyalty.service import Profile, SaleRequest, Service
from sync.client import _stored, _wire
from sync.protocol import PushRequest
from sync.server.store import ServerStore, TillAuth

from .conftest import LiveServer, Till
from .helpers import event_ids, nonzero, pair_till, sync_round, till_balances


def coupon_sale(service: Service, card: str, receipt: str, code: str) -> dict[str, object]:
    basket = Basket((BasketLine("latte", 1, 450, "coffee"),), (code,))
    raw = {"card": card, "receipt": receipt, "code": code}
    return service.commit(SaleRequest(basket, card, receipt, None, raw))


def sale_event_id(till: Till, receipt: str) -> str:
    with till.service.ledger.reader() as tx:
        row = tx.receipt(f"sale:{receipt}")
    assert row is not None
    return str(row.event_id)


def test_coupon_redeemed_at_two_offline_tills(
    store: ServerStore,
    live_server: LiveServer,
    make_till: Callable[..., Till],
    tmp_path: Path,
) -> None:
    key = tmp_path / "chain-coupon.key"  # the chain's tills share the coupon signing key
    a = make_till("till-a", coupon_key_file=key)
    b = make_till("till-b", coupon_key_file=key)
    for till in (a, b):
        pair_till(store, till, live_server.url)
    enrolled = a.service.enrol(Profile(name="Eve"))
    card, customer = enrolled["card"]["code"], enrolled["customer_id"]
    code = a.service.issue_coupon("coupon-2off", customer)["code"]
    sync_round(a)
    sync_round(b)  # b now knows the customer and the coupon

    # Both tills offline: each accepts the coupon (it is unused in its own ledger).
    used_a = coupon_sale(a.service, card, "A-1", code)
    used_b = coupon_sale(b.service, card, "B-1", code)
    assert used_a["total"] == used_b["total"] == 250
    id_a, id_b = sale_event_id(a, "A-1"), sale_event_id(b, "B-1")

    pushed_a = sync_round(a)  # a reaches the server first: its redemption stands
    assert pushed_a.conflicts == 0
    pushed_b = sync_round(b)
    assert pushed_b.conflicts == 1
    sync_round(a)
    sync_round(b)

    listed = [c for c in store.conflicts("m1") if c["reason"] == "coupon_reused"]
    assert len(listed) == 1
    conflict = listed[0]
    assert (conflict["event_id"], conflict["terminal_id"]) == (id_b, "till-b")
    assert (conflict["other_event_id"], conflict["other_terminal_id"]) == (id_a, "till-a")
    assert conflict["customer_id"] == customer
    assert store.conflicts("m1") == listed  # nothing else went wrong
    # b recorded it too; a (whose use stands) has nothing to settle.
    local = [c for c in b.replica.conflicts() if c["reason"] == "coupon_reused"]
    assert [c["event_id"] for c in local] == [id_b]
    assert a.replica.conflicts() == []

    # Nothing dropped: both sales are on the server and at both tills; balances converge.
    server_ids = set(store.event_ids("m1"))
    assert {id_a, id_b} <= server_ids
    assert event_ids(a) == event_ids(b) == server_ids
    assert nonzero(till_balances(a)) == nonzero(till_balances(b)) == nonzero(store.balances("m1"))
    for till in (a, b):
        assert verify(till.service.ledger).ok, verify(till.service.ledger).problems
        assert till.replica.waiting() == 0
        # the coupon is used up everywhere now
        assert code not in json.dumps(till.service.lookup(card))
    # A further round changes nothing and lists no new conflict.
    sync_round(b)
    assert len(store.conflicts("m1")) == 1


def test_flag_survives_a_lost_answer(
    store: ServerStore, make_till: Callable[..., Till], tmp_path: Path
) -> None:
    """The till's push answer is lost after the server committed: the resend is answered
    ``duplicate`` with the flag again, so the till still records the conflict (once)."""
    key = tmp_path / "chain-coupon.key"
    a, b = make_till("till-a", coupon_key_file=key), make_till("till-b", coupon_key_file=key)
    for till in (a, b):
        store.create_pairing_token(till.terminal_id, "m1", "s1")
    auth_a = TillAuth("till-a", "m1", "s1")
    auth_b = TillAuth("till-b", "m1", "s1")
    enrolled = a.service.enrol(Profile(name="Eve"))
    card, customer = enrolled["card"]["code"], enrolled["customer_id"]
    code = a.service.issue_coupon("coupon-2off", customer)["code"]

    def push(till: Till, auth: TillAuth, record: bool = True) -> list[Answer]:
        sent = till.replica.unsynced(1000)
        response = store.ingest(
            auth,
            PushRequest.model_validate(
                {"terminal_id": till.terminal_id, "events": [_wire(e) for e in sent]}
            ),
        )
        answers = [
            Answer(r.id, r.seq, r.status.value, r.reason, r.message, r.winner_payload)
            for r in response.results
        ]
        if record:
            till.replica.record_answers(sent, answers, response.head.epoch)
        return answers

    push(a, auth_a)
    # b gets a's customer and coupon through a pull, then redeems it; so does a.
    page = store.pull(auth_b, None, 5000)
    b.replica.apply_pulled([_stored(p.event) for p in page.events], [], page.cursor)
    coupon_sale(a.service, card, "A-1", code)
    coupon_sale(b.service, card, "B-1", code)
    push(a, auth_a)
    lost = push(b, auth_b, record=False)  # committed on the server, answer lost
    assert [x.reason for x in lost if x.reason] == ["coupon_reused"]
    resent = push(b, auth_b)
    assert [(x.status, x.reason) for x in resent if x.reason] == [("duplicate", "coupon_reused")]
    assert [c["reason"] for c in b.replica.conflicts()] == ["coupon_reused"]
    assert len(store.conflicts("m1")) == 1
    assert store.count("coupon_uses") == 1


def test_a_reward_coupon_withdrawn_by_a_refund_and_used_offline_elsewhere_is_listed(
    store: ServerStore,
    live_server: LiveServer,
    make_till: Callable[..., Till],
    tmp_path: Path,
) -> None:
    """A full refund at till A withdraws the reward coupon its sale issued; till B, offline
    and not knowing the refund, accepts that coupon. Both stand (they happened) and the
    server lists the second use as ``coupon_reused`` against the refund, as it does for two
    redemptions; every till counts the coupon used."""
    import dataclasses

    from pos_loyalty.domain.programs import CouponProgram
    from pos_loyalty.service import RefundRequest

    key = tmp_path / "chain-coupon.key"
    base = make_till("till-0", coupon_key_file=key).service.settings.programs
    programs = dataclasses.replace(
        base,
        programs=tuple(
            dataclasses.replace(p, reward_min_spend=5000) if isinstance(p, CouponProgram) else p
            for p in base.programs
        ),
    )
    a = make_till("till-a", coupon_key_file=key, programs=programs)
    b = make_till("till-b", coupon_key_file=key, programs=programs)
    for till in (a, b):
        pair_till(store, till, live_server.url)
    card = a.service.enrol(Profile(name="Eve"))["card"]["code"]
    big = Basket((BasketLine("tv", 1, 6000, "electronics"),))
    sale = a.service.commit(SaleRequest(big, card, "A-1", None, {"r": "A-1"}))
    code = next(i["code"] for i in sale["issued"] if i["kind"] == "coupon")
    sync_round(a)
    sync_round(b)  # b knows the customer and the coupon

    back = a.service.refund(RefundRequest("F-1", "A-1", None, None, {"f": "F-1"}))
    assert len(back["withdrawn"]["coupons"]) == 1
    used_b = coupon_sale(b.service, card, "B-1", code)  # b is offline: unused there
    assert used_b["total"] == 250
    sync_round(a)
    assert sync_round(b).conflicts == 1
    sync_round(a)
    listed = [c for c in store.conflicts("m1") if c["reason"] == "coupon_reused"]
    assert [(c["event_id"], c["terminal_id"]) for c in listed] == [
        (sale_event_id(b, "B-1"), "till-b")
    ]
    assert listed[0]["other_terminal_id"] == "till-a"
    for till in (a, b):
        assert verify(till.service.ledger).ok, verify(till.service.ledger).problems
        assert code not in json.dumps(till.service.lookup(card))
