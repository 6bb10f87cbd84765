"""Property tests over the real service and a real SQLite ledger (one per example).

Random sequences of enrolments, sales (some paying with points), partial and full refunds of
earlier receipts, replays and adjustments, with ``at`` moving forward over about two years so
that points expire. After each sequence:

(a) the projections equal a rebuild from the events (``verify``; and look-ups before and
    after ``rebuild`` agree);
(b) no discount exceeds its basket or its line;
(c) points are conserved: welcome + earned − redeemed − expired − reversed + returned
    + adjustments = balance, computed from the answers the service gave and the
    ``points.expired`` events in each customer's history.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from pos_loyalty.config import load_settings
from pos_loyalty.domain.basket import Basket, BasketLine, Redemption
from pos_loyalty.domain.errors import DomainError
from pos_loyalty.domain.refund import RefundRequestLine
from pos_loyalty.ledger.store import Ledger
from pos_loyalty.ledger.verify import rebuild, verify
from pos_loyalty.service import Profile, RefundRequest, SaleRequest, Service

T0 = datetime(2026, 1, 1, 8, tzinfo=UTC)
MAX_STEPS = 14
JUMP_DAYS = [0, 1, 7, 30, 60, 200, 366]  # per step, plus 1-600 minutes
MAX_STEP_MINUTES = 600
FINAL_DAYS = [1, 400]
# The till's clock: after every `at` used here, derived from the bounds the steps draw from
# (a fixed year was overtaken by sequences of long jumps: `at_in_future`).
NOW = (
    T0
    + MAX_STEPS * timedelta(days=max(JUMP_DAYS), minutes=MAX_STEP_MINUTES)
    + timedelta(days=max(FINAL_DAYS))
)
BASE_SETTINGS = load_settings()
WELCOME = 50

SKUS = {
    "espresso": "coffee",
    "latte": "coffee",
    "croissant": "bakery",
    "bun": "bakery",
    "voucher": "gift-card",
}


@dataclass
class Sold:
    receipt_id: str
    customer: int | None
    request: SaleRequest
    response: dict[str, Any]
    left: dict[str, int]  # units per SKU not yet refunded


@dataclass
class Book:
    """What the test was told, per customer index: the independent side of conservation."""

    earned: int = 0
    redeemed: int = 0
    reversed: int = 0
    returned: int = 0
    adjusted: int = 0


@dataclass
class Run:
    service: Service
    cards: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    books: list[Book] = field(default_factory=list)
    sales: list[Sold] = field(default_factory=list)
    at: datetime = T0
    counter: int = 0

    def next_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter}"

    def events(self) -> int:
        with self.service.ledger.reader() as tx:
            return tx.count_events()

    def spendable(self, customer: int) -> int:
        out = self.service.lookup(self.cards[customer], self.at)
        return int(out["balances"]["points"]["balance"])


def check_response(response: dict[str, Any]) -> None:
    """(b): no discount exceeds its basket, and none exceeds its line."""
    assert 0 <= response["total_discount"] <= response["total_before"]
    assert response["total"] == response["total_before"] - response["total_discount"]
    for ln in response["lines"]:
        assert 0 <= ln["discount"] <= ln["qty"] * ln["unit_price"]
        assert ln["total"] == ln["qty"] * ln["unit_price"] - ln["discount"]
    assert sum(d["amount"] for d in response["discounts"]) == response["total_discount"]


def do_sale(run: Run, data: st.DataObject) -> None:
    customers = len(run.cards)
    who = data.draw(st.one_of(st.none(), st.integers(0, customers - 1)), label="customer")
    chosen = data.draw(
        st.lists(
            st.tuples(st.sampled_from(sorted(SKUS)), st.integers(1, 3), st.integers(0, 1500)),
            min_size=1,
            max_size=4,
        ),
        label="lines",
    )
    lines = tuple(BasketLine(sku, qty, price, SKUS[sku]) for sku, qty, price in chosen)
    redeem: tuple[Redemption, ...] = ()
    if who is not None:
        spendable = run.spendable(who)
        if spendable > 0 and data.draw(st.booleans(), label="pay with points"):
            redeem = (Redemption("points", data.draw(st.integers(1, spendable), label="pts")),)
    rid = run.next_id("R")
    raw = {
        "receipt_id": rid,
        "lines": [list(x) for x in chosen],
        "redeem": [[r.program, r.points] for r in redeem],
        "at": run.at.isoformat(),
        "card": None if who is None else run.cards[who],
    }
    request = SaleRequest(
        Basket(lines, redeem=redeem),
        None if who is None else run.cards[who],
        rid,
        run.at,
        raw,
    )
    response = run.service.commit(request)
    check_response(response)
    if who is not None:
        book = run.books[who]
        book.earned += response["earned"].get("points", 0)
        book.redeemed += response["redeemed"].get("points", 0)
        if redeem:
            assert response["redeemed"].get("points", 0) <= redeem[0].points
    else:
        assert response["earned"] == {} and response["redeemed"] == {}
    left: dict[str, int] = {}
    for ln in lines:
        left[ln.sku] = left.get(ln.sku, 0) + ln.qty
    run.sales.append(Sold(rid, who, request, response, left))


def do_refund(run: Run, data: st.DataObject) -> None:
    open_sales = [s for s in run.sales if any(s.left.values())]
    if not open_sales:
        return
    sold = data.draw(st.sampled_from(open_sales), label="receipt")
    lines: tuple[RefundRequestLine, ...] | None
    if data.draw(st.booleans(), label="full"):
        lines = None
        units = dict(sold.left)
    else:
        skus = sorted(sku for sku, n in sold.left.items() if n > 0)
        picked = data.draw(st.lists(st.sampled_from(skus), min_size=1, unique=True), label="skus")
        units = {sku: data.draw(st.integers(1, sold.left[sku]), label=sku) for sku in picked}
        lines = tuple(RefundRequestLine(sku, n) for sku, n in units.items())
    fid = run.next_id("F")
    raw = {
        "refund_id": fid,
        "receipt_id": sold.receipt_id,
        "lines": None if lines is None else [[x.sku, x.qty] for x in lines],
        "at": run.at.isoformat(),
    }
    response = run.service.refund(RefundRequest(fid, sold.receipt_id, lines, run.at, raw))
    for sku, n in units.items():
        sold.left[sku] -= n
    assert 0 <= response["amount"] <= sold.response["total"]
    if sold.customer is not None:
        book = run.books[sold.customer]
        book.reversed += response["reversed"].get("points", 0)
        book.returned += response["returned"].get("points", 0)
        if response["balances"]["points"]["balance"] < 0:
            event("a refund left a negative balance")
    # a refund exceeding what is left is refused and writes nothing
    before = run.events()
    sku = data.draw(st.sampled_from(sorted(sold.left)), label="too many")
    with pytest.raises(DomainError) as info:
        run.service.refund(
            RefundRequest(
                run.next_id("F"),
                sold.receipt_id,
                (RefundRequestLine(sku, sold.left[sku] + 1),),
                run.at,
                {"x": run.counter},
            )
        )
    assert info.value.code == "refund_exceeds_sale"
    assert run.events() == before


def do_adjust(run: Run, data: st.DataObject) -> None:
    who = data.draw(st.integers(0, len(run.cards) - 1), label="customer")
    delta = data.draw(st.integers(-100, 200).filter(bool), label="delta")
    run.service.adjust(run.ids[who], "points", delta, "goodwill", run.at)
    run.books[who].adjusted += delta


def do_replay(run: Run, data: st.DataObject) -> None:
    if not run.sales:
        return
    sold = data.draw(st.sampled_from(run.sales), label="replay")
    before = run.events()
    assert run.service.commit(sold.request) == sold.response
    assert run.events() == before


def do_overdraw(run: Run, data: st.DataObject) -> None:
    who = data.draw(st.integers(0, len(run.cards) - 1), label="customer")
    spendable = run.spendable(who)
    before = run.events()
    request = SaleRequest(
        Basket(
            (BasketLine("bun", 1, 100_000, "bakery"),),
            redeem=(Redemption("points", max(spendable, 0) + 1),),
        ),
        run.cards[who],
        run.next_id("R"),
        run.at,
        {"overdraw": run.counter},
    )
    with pytest.raises(DomainError) as info:
        run.service.commit(request)
    assert info.value.code == "insufficient_points"
    assert run.events() == before


ACTIONS = {
    "sale": do_sale,
    "refund": do_refund,
    "adjust": do_adjust,
    "replay": do_replay,
    "overdraw": do_overdraw,
}
ACTION_WEIGHTS = ["sale"] * 5 + ["refund"] * 3 + ["adjust", "replay", "overdraw"]


def lookups(run: Run) -> list[dict[str, Any]]:
    return [run.service.lookup(card, run.at) for card in run.cards]


def run_sequence(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory(prefix="pos-loyalty-prop-") as tmp:
        cfg = replace(BASE_SETTINGS, data_dir=Path(tmp))
        ledger = Ledger(Path(tmp) / "ledger.sqlite", cfg.terminal_id)
        try:
            run = Run(Service(cfg, ledger, clock=lambda: NOW))
            for _ in range(data.draw(st.integers(1, 2), label="customers")):
                out = run.service.enrol(Profile(name="Prop"), at=run.at)
                assert out["welcome"] == {"points": WELCOME}
                run.cards.append(out["card"]["code"])
                run.ids.append(out["customer_id"])
                run.books.append(Book())
            steps = data.draw(st.integers(1, MAX_STEPS), label="steps")
            for _ in range(steps):
                # up to ~2 months per step, sometimes a year: lots expire along the way
                jump = data.draw(st.sampled_from(JUMP_DAYS), label="days")
                minutes = data.draw(st.integers(1, MAX_STEP_MINUTES))
                run.at += timedelta(days=jump, minutes=minutes)
                action = data.draw(st.sampled_from(ACTION_WEIGHTS), label="action")
                ACTIONS[action](run, data)
            check_end(run, data)
            check_rebuild(run)
        finally:
            ledger.close()


PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPERTY_SETTINGS
@given(st.data())
def test_random_sequences_keep_the_ledger_consistent(data: st.DataObject) -> None:
    run_sequence(data)


def check_rebuild(run: Run) -> None:
    """(a) again: what a look-up shows is the same after the projections are rebuilt."""
    seen = lookups(run)
    rebuild(run.service.ledger)
    assert lookups(run) == seen
    report = verify(run.service.ledger)
    assert report.ok, [str(p) for p in report.problems]


def check_end(run: Run, data: st.DataObject) -> None:
    # (a) the projections equal a rebuild from the events
    report = verify(run.service.ledger)
    assert report.ok, [str(p) for p in report.problems]

    # (c) conservation. A last adjustment at a later moment records every lot that is due by
    # then, so the balance it answers is the folded balance with nothing left to expire.
    run.at += timedelta(days=data.draw(st.sampled_from(FINAL_DAYS), label="final days"))
    for who, customer_id in enumerate(run.ids):
        out = run.service.adjust(customer_id, "points", 1, "final check", run.at)
        run.books[who].adjusted += 1
        history = run.service.customer(customer_id, limit=1000)["history"]
        assert len(history) < 1000
        expired = -sum(
            change["delta"]
            for ev in history
            if ev["kind"] == "points.expired"
            for change in ev["changes"]
            if change["program"] == "points"
        )
        assert expired >= 0
        book = run.books[who]
        event("points expired" if expired else "nothing expired")
        if min(book.reversed, book.returned, book.redeemed):
            event("refunds took earned points and gave spent points back")
        expected = (
            WELCOME
            + book.earned
            - book.redeemed
            - expired
            - book.reversed
            + book.returned
            + book.adjusted
        )
        assert out["balances"]["points"]["balance"] == expected
        assert run.spendable(who) == expected
    report = verify(run.service.ledger)
    assert report.ok, [str(p) for p in report.problems]
