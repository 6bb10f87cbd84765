"""Quote latency: a 50-line basket against 25 active programs, engine alone and via the service.

The programs are built in code: 15 stamp cards over different categories (per item and per
visit, free item and fixed discount, various stamp counts) and 10 points programs with
different rates, point values, expiry and excluded categories. The customer holds stamps on
every card (enough for a reward on most) and points with several lots in every points
program; the basket pays with points from one program.

Measured: ``pos_loyalty.domain.engine.quote`` called directly with a ``CustomerState``, and
``Service.quote`` (card look-up, state load from the ledger, expiry check, engine, response)
on a ledger where that customer was given the same balances. Baseline: building the 50
``BasketLine`` objects and the ``Basket`` from the request's JSON-like dicts, the cheapest
thing any quote must do.

    python bench/quote_latency.py [--n 2000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import median_ms, p99_ms, ratio, verdict

from pos_loyalty.config import load_settings
from pos_loyalty.domain import engine
from pos_loyalty.domain.basket import Basket, BasketLine, Redemption
from pos_loyalty.domain.events import Event, Kind, Posting, Unit
from pos_loyalty.domain.ids import uuid7
from pos_loyalty.domain.programs import (
    PointsProgram,
    Program,
    ProgramSet,
    StampBasis,
    StampCardProgram,
    StampReward,
)
from pos_loyalty.domain.state import CustomerState, Lot, PointsAccount
from pos_loyalty.ledger.store import Ledger
from pos_loyalty.service import Profile, SaleRequest, Service

TARGET_MS = 1.0
CATEGORIES = tuple(f"cat-{i:02d}" for i in range(20))
AT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def programs_25() -> ProgramSet:
    built: list[Program] = []
    for i in range(15):
        built.append(
            StampCardProgram(
                id=f"stamps-{i:02d}",
                label=f"Stamp card {i}",
                categories=frozenset({CATEGORIES[i], CATEGORIES[(i + 7) % 20]}),
                skus=frozenset({f"sku-{i * 3:03d}"}),
                per=StampBasis.VISIT if i % 4 == 3 else StampBasis.ITEM,
                required=5 + i % 6,
                reward=StampReward.FIXED_DISCOUNT if i % 3 == 2 else StampReward.FREE_ITEM,
                reward_amount=150 if i % 3 == 2 else 0,
                reward_label=f"Reward {i}",
            )
        )
    for i in range(10):
        built.append(
            PointsProgram(
                id=f"points-{i:02d}",
                label=f"Points {i}",
                points_per_unit=1 + i % 3,
                unit=100 if i % 2 == 0 else 50,
                point_value=1 + i % 2,
                expiry_days=0 if i == 9 else 180 + 30 * i,
                excluded_categories=frozenset({CATEGORIES[i], CATEGORIES[(i + 11) % 20]}),
                redeemable=i % 5 != 4,
            )
        )
    programs = ProgramSet(currency="EUR", programs=tuple(built))
    assert not programs.problems(), programs.problems()
    return programs


def basket_json() -> list[dict[str, Any]]:
    return [
        {
            "sku": f"sku-{i:03d}",
            "qty": 1 + i % 3,
            "unit_price": 120 + (i * 37) % 900,
            "category": CATEGORIES[i % len(CATEGORIES)],
        }
        for i in range(50)
    ]


REDEEM = (Redemption("points-00", 300),)


def make_basket(lines: list[dict[str, Any]]) -> Basket:
    return Basket(
        lines=tuple(
            BasketLine(
                sku=str(raw["sku"]),
                qty=int(raw["qty"]),
                unit_price=int(raw["unit_price"]),
                category=raw["category"],
            )
            for raw in lines
        ),
        redeem=REDEEM,
    )


def customer_state(programs: ProgramSet) -> CustomerState:
    state = CustomerState("bench-customer")
    for card in programs.stamp_cards:
        state.stamps[card.id] = card.required * 2 - 1  # one reward ready, most of the next
    for pts in programs.points:
        account = PointsAccount()
        for k in range(6):
            expires = AT + timedelta(days=20 + 40 * k) if pts.expiry_days else None
            lot = Lot(f"lot-{pts.id}-{k}", AT - timedelta(days=300 - 40 * k), expires, 200)
            account.lots[lot.lot_id] = lot
            account.balance += lot.remaining
        state.points[pts.id] = account
    return state


def seeded_service(
    data_dir: Path, programs: ProgramSet, state: CustomerState
) -> tuple[Service, str]:
    """A service over ``programs`` with one customer holding ``state``'s balances and lots.

    The balances are booked as ``account.adjusted`` events (one per stamp card and one per
    points lot, as ``Service.adjust`` makes them) appended in a single ledger transaction.
    """
    settings = replace(load_settings(None, data_dir=data_dir), programs=programs)
    service = Service(settings, Ledger(data_dir / "ledger.sqlite", settings.terminal_id))
    enrolled = service.enrol(Profile(name="Bench"), at=AT - timedelta(days=400))
    customer_id = str(enrolled["customer_id"])
    events: list[Event] = []
    for card, count in state.stamps.items():
        posting = Posting(card, Unit.STAMPS, count)
        events.append(adjustment(settings.terminal_id, customer_id, AT, posting))
    for program, account in state.points.items():
        for lot in account.lots.values():
            posting = Posting(program, Unit.POINTS, lot.remaining, expires_at=lot.expires_at)
            events.append(adjustment(settings.terminal_id, customer_id, lot.earned_at, posting))
    with service.ledger.transaction() as tx:
        tx.append(events)
    return service, str(enrolled["card"]["code"])


def adjustment(terminal: str, customer_id: str, at: datetime, posting: Posting) -> Event:
    return Event(
        uuid7(),
        Kind.ACCOUNT_ADJUSTED,
        terminal,
        at,
        customer_id,
        postings=(posting,),
        data={"reason": "bench set-up"},
    )


def sample(fn: Callable[[], object], n: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="timed quotes per path (default 2000)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    warmup = min(100, args.n)

    programs = programs_25()
    state = customer_state(programs)
    lines = basket_json()
    basket = make_basket(lines)
    result = engine.quote(basket, state, programs, AT)
    assert result.total_discount > 0 and result.earned, "the bench basket should hit programs"

    base = sample(lambda: make_basket(lines), args.n, warmup)
    eng = sample(lambda: engine.quote(basket, state, programs, AT), args.n, warmup)

    tmp = Path(tempfile.mkdtemp(prefix="bench-quote-"))
    try:
        service, card = seeded_service(tmp, programs, state)
        try:
            request = SaleRequest(basket=basket, card=card, at=AT)  # the engine path's moment
            via_service = sample(lambda: service.quote(request), args.n, warmup)
            svc_result = service.quote(request)
        finally:
            service.ledger.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    eng_med, base_med, svc_med = median_ms(eng), median_ms(base), median_ms(via_service)
    print(
        f"basket: {len(basket.lines)} lines  programs: {len(programs.programs)} "
        f"({len(programs.stamp_cards)} stamp cards, {len(programs.points)} points)  "
        f"discounts: {len(result.discounts)} (service: {len(svc_result['discounts'])})  "
        f"quotes timed: {args.n}"
    )
    print(
        f"engine quote median: {eng_med:.3f} ms  baseline median: {base_med:.3f} ms  "
        f"ratio: {ratio(eng_med, base_med):.1f}  (target <= {TARGET_MS} ms) "
        f"{verdict(eng_med <= TARGET_MS)}"
    )
    print(f"engine quote p99: {p99_ms(eng):.3f} ms")
    print(
        f"service quote median: {svc_med:.3f} ms  baseline median: {base_med:.3f} ms  "
        f"ratio: {ratio(svc_med, base_med):.1f}  p99: {p99_ms(via_service):.3f} ms"
    )
    print("baseline: building the 50 BasketLine objects and the Basket from request dicts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
