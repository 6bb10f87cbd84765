"""Side tables every till and the server's snapshot fold agree on, whatever each holds: the
use a refund's withdrawal counts on a till that does not hold the refunded sale (bootstrapped
after it), and coupons issued under request ids the POSes of two tills both chose. Both were
found in review: the till without the sale kept a withdrawn coupon usable; a till's rebuild
and the server's fold disagreed on the second coupon."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from pos_loyalty.bootstrap import open_service
from pos_loyalty.config import load_settings
from pos_loyalty.domain.basket import Basket, BasketLine
from pos_loyalty.domain.events import Event
from pos_loyalty.ledger import schema
from pos_loyalty.ledger.codec import event_from_row
from pos_loyalty.ledger.projections import rebuild_into, side_table_problem
from pos_loyalty.ledger.snapshot import SnapshotFold
from pos_loyalty.service import Profile, RefundRequest, SaleRequest, Service

CONF = """
[terminal]
id = "{tid}"
store_id = "store-1"
[shop]
currency = "EUR"
[[programs]]
id = "points"
kind = "points"
label = "Points"
[[programs]]
id = "c2"
kind = "coupon"
label = "2.00 off"
amount = 200
valid_days = 30
reward_min_spend = 5000
"""


def make(tmp: Path, tid: str) -> Service:
    p = tmp / f"{tid}.toml"
    p.write_text(CONF.format(tid=tid))
    return open_service(load_settings(p, data_dir=tmp / tid))


def events(svc: Service) -> list[Event]:
    with svc.ledger.reader() as tx:
        rows = list(tx.conn.execute(select(schema.events).order_by(schema.events.c.pos)))
        return [event_from_row(r, tx.dicts) for r in rows]


def folded(evs: list[Event]) -> SnapshotFold:
    fold = SnapshotFold()
    for ev in evs:
        payload = {"p": [p.to_json() for p in ev.postings], "d": dict(ev.data)}
        fold.add(ev.id, ev.terminal_id, ev.kind.value, ev.at.isoformat(), ev.customer_id, payload)
    return fold


def test_a_withdrawn_coupon_is_used_on_a_till_without_the_refunded_sale(tmp_path: Path) -> None:
    a = make(tmp_path, "till-a")
    n = make(tmp_path, "till-n")
    try:
        t0 = datetime(2025, 1, 1, 9, tzinfo=UTC)
        card = a.enrol(Profile(name="x"), t0)["card"]["code"]
        basket = Basket((BasketLine("tv", 1, 6000, "electronics"),), (), ())
        a.commit(SaleRequest(basket, card, "R1", t0 + timedelta(hours=1), {"r": 1}))
        with a.ledger.reader() as tx:
            serials = [r.serial for r in tx.conn.execute(select(schema.coupons))]
        assert len(serials) == 1
        back = a.refund(RefundRequest("F1", "R1", None, t0 + timedelta(hours=2), {"f": 1}))
        assert back["withdrawn"]["coupons"] == serials
        refund = events(a)[-1]
        key = f"coupon:{serials[0]}"
        with a.ledger.reader() as tx:
            assert {r[0]: r[1] for r in tx.conn.execute(select(schema.usage))}[key] == 1
        assert dict(map(tuple, folded(events(a)).merchant_wide()[0]))[key] == 1
        with n.ledger.transaction() as tx:  # holds no receipt of the sale
            assert side_table_problem(tx.conn, refund) is not None
            rebuild_into(tx.conn, [refund])
            usage: dict[str, Any] = {r[0]: r[1] for r in tx.conn.execute(select(schema.usage))}
        assert usage.get(key) == 1
    finally:
        a.ledger.close()
        n.ledger.close()


def test_request_ids_two_tills_chose_alike_keep_both_coupons_everywhere(tmp_path: Path) -> None:
    a, b, c = (make(tmp_path, t) for t in ("till-a", "till-b", "till-c"))
    try:
        when = datetime(2025, 1, 1, 9, tzinfo=UTC)
        a.issue_coupon("c2", None, when, request_id="REQ-1")
        b.issue_coupon("c2", None, when, request_id="REQ-1")
        evs = events(a) + events(b)
        with c.ledger.transaction() as tx:
            rebuild_into(tx.conn, evs)
            rebuilt = sorted(r.serial for r in tx.conn.execute(select(schema.coupons)))
        assert len(rebuilt) == 2
        assert rebuilt == sorted(coupon[0] for coupon in folded(evs).merchant_wide()[1])
        # A retry at each till still answers its own first coupon.
        again = a.issue_coupon("c2", None, when, request_id="REQ-1")
        with a.ledger.reader() as tx:
            assert [r.serial for r in tx.conn.execute(select(schema.coupons))] == [again["serial"]]
    finally:
        for s in (a, b, c):
            s.ledger.close()


def test_a_coupon_issued_by_a_sale_whose_receipt_id_is_taken_is_kept(tmp_path: Path) -> None:
    """Two tills' POSes used one receipt id; the sale of the second to arrive keeps its
    balances but not its receipt here, and its reward coupon went with the receipt: unknown
    on that till, valid on the other (found by the rewards convergence property test)."""
    a, b, c = (make(tmp_path, t) for t in ("till-a", "till-b", "till-c"))
    try:
        t0 = datetime(2025, 1, 1, 9, tzinfo=UTC)
        card = a.enrol(Profile(name="x"), t0)["card"]["code"]
        big = Basket((BasketLine("tv", 1, 6000, "electronics"),), (), ())
        a.commit(SaleRequest(big, card, "R1", t0 + timedelta(hours=1), {"r": "a"}))
        small = Basket((BasketLine("pen", 1, 100, "office"),), (), ())
        b.commit(SaleRequest(small, None, "R1", t0 + timedelta(hours=1), {"r": "b"}))
        evs = events(b) + events(a)  # b's receipt R1 first: a's sale has its id taken
        with c.ledger.transaction() as tx:
            rebuild_into(tx.conn, evs)
            assert side_table_problem(tx.conn, evs[-1]) is not None  # R1 is b's here
            rebuilt = [r.serial for r in tx.conn.execute(select(schema.coupons))]
        with a.ledger.reader() as tx:
            issued = [r.serial for r in tx.conn.execute(select(schema.coupons))]
        assert len(issued) == 1 and rebuilt == issued
        assert [coupon[0] for coupon in folded(evs).merchant_wide()[1]] == []  # to a customer
        assert sorted(folded(evs).coupons) == issued
    finally:
        for s in (a, b, c):
            s.ledger.close()
