"""Convergence of the cross-till rewards (invariants 6-9) as a property.

Three tills share customers and run random sequences of enrolments (some with the referral
code of an existing customer, referral ``trigger = "first_purchase"``), sales (big ones issue
a reward coupon and a next-visit offer, later ones use the offer or a coupon, some pay with
points and the cashback wallet, some reuse another till's receipt id), partial and full
refunds at the same or another till, wallet payouts, adjustments and till-issued coupons
with request ids (retried at the same or another till), random offline periods and days
going by (points, offers and coupons expire). Then everyone syncs; one more till
bootstraps from the server's snapshot, sells to every customer, the old tills refund sales
from before the snapshot and every till refunds some of the new till's sales, and everyone
syncs again. After each sync and after the bootstrap:

- every till's balances equal the server's (``store.balances``);
- every till holds the same usage counters (a reward coupon a full refund withdrew, or a
  coupon used, counts as used everywhere, also on the bootstrapped till, and the server's
  ``coupon_uses`` lists exactly those), the same customers, cards, coupons and referral
  codes (also the coupons of a sale whose receipt id collided: see the deterministic test);
- ``verify`` passes on every till, nothing waits to be pushed, the server holds exactly the
  union of the tills' events (but the local-only events that book an expiry's difference);
- overdrafts stay within the offline limits (points and wallet money), and every overdraft
  a spend made (points or wallet money, at a sale or a payout) is flagged.

``CONV_REWARDS_EXAMPLES`` sets the number of examples (default 8 per backend, for CI).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from pos_loyalty.bootstrap import open_service
from pos_loyalty.config import OfflineLimits, load_settings
from pos_loyalty.domain.basket import Basket, BasketLine, Redemption, WalletPayment
from pos_loyalty.domain.errors import DomainError
from pos_loyalty.domain.events import Kind
from pos_loyalty.domain.programs import (
    CashbackProgram,
    CouponProgram,
    NextVisitProgram,
    ProgramSet,
    ReferralProgram,
    ReferralTrigger,
)
from pos_loyalty.domain.refund import RefundRequestLine
from pos_loyalty.ledger import schema as till_schema
from pos_loyalty.ledger.replication import Replica
from pos_loyalty.ledger.verify import verify
from pos_loyalty.service import Profile, RefundRequest, SaleRequest, Service
from sync.bootstrap import bootstrap
from sync.server import schema
from sync.server.app import create_server_app
from sync.server.store import ServerStore

from .conftest import Postgres, Till
from .helpers import event_ids, nonzero, pair_till, sync_round, till_balances

TILLS = 3
URL = "http://testserver"
EXAMPLES = int(os.environ.get("CONV_REWARDS_EXAMPLES", "8"))
LIMITS = OfflineLimits(
    points_per_card_per_day=150,
    points_per_terminal_per_day=400,
    wallet_per_card_per_day=200,
    wallet_per_terminal_per_day=500,
)
COUPON = "coupon-2off"  # 2.00 off coffee; issued for every sale paying 30.00 or more
OFFER = "next-visit"
WALLET = "cashback"
REFERRAL = "referral"

# Weighted: sales, refunds and syncs make the interesting histories.
START_AGO = timedelta(days=1000)
OP_NAMES = [
    *["enrol", "enrol_referred", "enrol_referred"],
    *["sale", "big_sale", "big_sale", "coupon_sale", "coupon_sale", "pay_sale", "pay_sale"],
    *["refund_full", "refund_full", "refund_part", "reuse_receipt"],
    *["payout", "adjust", "issue_coupon", "retry"],
    *["sync", "sync", "sync", "online", "offline", "wait"],
]
Op = tuple[int, str, int, int]
OPS = st.lists(
    st.tuples(
        st.integers(0, TILLS - 1),
        st.sampled_from(OP_NAMES),
        st.integers(0, 7),
        st.integers(0, 40),
    ),
    min_size=4,
    max_size=40,
)


def reward_programs(base: ProgramSet) -> ProgramSet:
    """The demo set with a reward coupon for sales of 30.00 and more, a next-visit offer
    (10% off the next visit after 25.00), a first-purchase referral and a cashback wallet
    that can be paid out."""
    programs: list[Any] = []
    for p in base.programs:
        if isinstance(p, CouponProgram):
            p = dataclasses.replace(p, reward_min_spend=3000)
        elif isinstance(p, ReferralProgram):
            p = dataclasses.replace(p, trigger=ReferralTrigger.FIRST_PURCHASE)
        programs.append(p)
    programs.append(NextVisitProgram(OFFER, "Come back soon", 1000, 7, 2500))
    programs.append(CashbackProgram(WALLET, "Cashback wallet", 500, payout=True))
    out = dataclasses.replace(base, programs=tuple(programs))
    assert not out.problems(), out.problems()
    return out


def make_till(root: Path, terminal_id: str) -> Till:
    base = load_settings(None, data_dir=root / terminal_id)
    s = dataclasses.replace(
        base,
        terminal_id=terminal_id,
        sync=dataclasses.replace(base.sync, enabled=True, server_url=URL),
        offline=LIMITS,
        coupon_key_file=root / "chain-coupon.key",  # the chain shares its coupon key
        programs=reward_programs(base.programs),
    )
    svc = open_service(s)
    till = Till(svc, Replica(svc.ledger), root / terminal_id)
    svc.online = lambda: till.online
    return till


Request = Callable[[Service], dict[str, Any]]  # a POS call with a request id, to any till


@dataclasses.dataclass
class Customer:
    card: str
    id: str
    referral_code: str | None


@dataclasses.dataclass
class World:
    tills: list[Till]
    http: Any
    customers: list[Customer] = dataclasses.field(default_factory=list)
    receipts: list[str] = dataclasses.field(default_factory=list)  # every committed sale
    refunds: list[str] = dataclasses.field(default_factory=list)  # every refund id used
    coupons: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (customer, code)
    requests: list[Request] = dataclasses.field(default_factory=list)  # with request ids
    n: int = 0
    # The POS's clock: every write is dated (``at``), starting long ago so that points
    # (365 days), offers (7) and coupons (30) expire along the way; never in the future.
    at: datetime = dataclasses.field(default_factory=lambda: datetime.now(UTC) - START_AGO)

    def tick(self, delta: timedelta = timedelta(minutes=1)) -> datetime:
        self.at = min(self.at + delta, datetime.now(UTC) - timedelta(hours=3))
        return self.at

    def sold(self, receipt: str, customer: str, response: dict[str, Any]) -> None:
        self.receipts.append(receipt)
        for item in response["issued"]:
            if item["kind"] == "coupon":
                self.coupons.append((customer, item["code"]))

    def next_id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n}"


def sync_all(world: World, rounds: int = 2, tills: list[Till] | None = None) -> None:
    for _ in range(rounds):
        for till in tills or world.tills:
            sync_round(till, http=world.http)


def basket(
    kind: str, a: int, b: int, codes: tuple[str, ...] = (), held: tuple[int, int] = (0, 0)
) -> Basket:
    """Two coffees and a pastry (small), or a big basket that issues a reward coupon and a
    next-visit offer; ``pay_sale`` pays with a share of the points and wallet money the till
    shows as ``held`` (a share above the offline limit is refused while offline)."""
    lines = [BasketLine("latte", 2, 350 + 10 * a, "coffee"), BasketLine("croissant", 1, 250)]
    if kind in ("big_sale", "coupon_sale") and b % 3 != 2:
        lines.append(BasketLine("grinder", 1, 3000 + 100 * b, "equipment"))
    redeem: tuple[Redemption, ...] = ()
    wallet: tuple[WalletPayment, ...] = ()
    if kind == "pay_sale":
        lines.append(BasketLine("beans", 1, 1200 + 100 * a, "coffee"))
        points, money = held
        if b % 3 != 2 and points > 0:
            redeem = (Redemption("points", max(1, points * (1 + b % 4) // 4)),)
        if b % 3 != 1 and money > 0:
            wallet = (WalletPayment(WALLET, max(1, money * (1 + a % 4) // 4)),)
    return Basket(tuple(lines), codes, redeem, (), wallet)


def held(till: Till, card: str, at: datetime) -> tuple[int, int]:
    """(points, wallet money) the till shows for the card."""
    balances = till.service.lookup(card, at)["balances"]
    return int(balances["points"]["balance"]), int(balances[WALLET]["balance"])


def commit(till: Till, card: str, receipt: str, bk: Basket, at: datetime) -> dict[str, Any]:
    raw = {"receipt": receipt, "card": card, "basket": repr(bk), "at": at.isoformat()}
    return till.service.commit(SaleRequest(bk, card, receipt, at, raw))


def run_op(world: World, op: Op) -> None:
    t, name, a, b = op
    till = world.tills[t]
    svc = till.service
    customers = world.customers
    who = customers[(a + b) % len(customers)] if customers else None
    if name == "sync":
        sync_round(till, http=world.http)
        return
    if name == "wait":  # days go by: points, offers and coupons may expire meanwhile
        world.tick(timedelta(days=1 + 9 * b, hours=a))
        return
    if name in ("online", "offline"):
        till.online = name == "online"
        if till.online:
            sync_round(till, http=world.http)
        return
    if till.online:  # an online till is up to date before it sells, and pushes right after
        sync_round(till, http=world.http)
    at = world.tick()
    try:
        if name in ("enrol", "enrol_referred"):
            code = who.referral_code if name == "enrol_referred" and who else None
            got = svc.enrol(Profile(name=world.next_id("c"), referral_code=code), at)
            customers.append(
                Customer(got["card"]["code"], got["customer_id"], got["referral_code"])
            )
        elif name == "reuse_receipt" and world.receipts and who is not None:
            # Two POSes choosing alike: a receipt id another till used (refused where known)
            receipt = world.receipts[(a * 7 + b) % len(world.receipts)]
            done = commit(till, who.card, receipt, basket("big_sale", a, b), at)
            world.sold(receipt, who.id, done)
        elif name in ("sale", "big_sale", "coupon_sale", "pay_sale") and who is not None:
            codes: tuple[str, ...] = ()
            if name == "coupon_sale":
                own = [code for owner, code in world.coupons if owner == who.id]
                if own:
                    codes = (own[b % len(own)],)
                elif b % 5 == 0:
                    codes = ("TAKE5",)
            receipt = world.next_id(f"R{t}")
            have = held(till, who.card, at) if name == "pay_sale" else (0, 0)
            done = commit(till, who.card, receipt, basket(name, a, b, codes, have), at)
            world.sold(receipt, who.id, done)
        elif name in ("refund_full", "refund_part") and world.receipts:
            receipt = world.receipts[(a * 41 + b) % len(world.receipts)]
            lines = None if name == "refund_full" else (RefundRequestLine("latte", 1),)
            refund_id = world.next_id(f"F{t}")
            if a == 7 and world.refunds:  # a refund id another till may have used
                refund_id = world.refunds[b % len(world.refunds)]
            world.refunds.append(refund_id)
            svc.refund(
                RefundRequest(
                    refund_id, receipt, lines, at, {"receipt": receipt, "full": lines is None}
                )
            )
        elif name in ("payout", "adjust", "issue_coupon") and who is not None:
            request = world.next_id(name)
            call: Request
            if name == "payout":
                amount = max(1, held(till, who.card, at)[1] * (1 + b % 4) // 4)
                call = partial(
                    Service.wallet_payout,
                    customer_id=who.id,
                    program_id=WALLET,
                    amount=amount,
                    at=at,
                    request_id=request,
                )
            elif name == "adjust":
                call = partial(
                    Service.adjust,
                    customer_id=who.id,
                    program_id="points",
                    delta=(b - 15) * 7 or 3,
                    reason="goodwill",
                    at=at,
                    request_id=request,
                )
            else:
                call = partial(
                    Service.issue_coupon,
                    program_id=COUPON,
                    customer_id=who.id,
                    at=at,
                    request_id=request,
                )
            world.requests.append(call)
            got = call(svc)
            if "code" in got:
                world.coupons.append((who.id, got["code"]))
        elif name == "retry" and world.requests:
            # The POS sends a request again, to this till (idempotent if it made it) or,
            # with the same id, to another till (request ids are per-till receipts).
            got = world.requests[(a + b) % len(world.requests)](svc)
            if "code" in got and (got["customer_id"], got["code"]) not in world.coupons:
                world.coupons.append((got["customer_id"], got["code"]))
    except DomainError as exc:
        # unknown card or receipt (not pulled yet), offline limit, insufficient points...
        event(f"{name}: {exc.code}")  # --hypothesis-show-statistics
    else:
        event(f"{name}: done")
    if till.online:
        sync_round(till, http=world.http)


def coupon_usage(till: Till) -> dict[str, int]:
    with till.service.ledger.reader() as tx:
        return {
            str(key): int(count)
            for key, count in tx.conn.execute(select(till_schema.usage))
            if key.startswith("coupon:")
        }


def side_tables(till: Till) -> dict[str, Any]:
    """Usage counters, customers, cards, coupons and referral codes: what a bootstrapped
    till holds as a replaying one does (no history: receipts, redemptions, lots' order)."""
    out: dict[str, Any] = {}
    with till.service.ledger.reader() as tx:
        for name in ("usage", "customers", "cards", "coupons", "referrals"):
            table = till_schema.metadata.tables[name]
            rows = [tuple(r) for r in tx.conn.execute(select(table))]
            out[name] = sorted(rows)
    return out


def server_events(store: ServerStore) -> list[Any]:
    e = schema.events
    with store.engine.connect() as conn:
        return list(
            conn.execute(
                select(e.c.kind, e.c.customer_id, e.c.at, e.c.payload)
                .where(e.c.merchant_id == "m1")
                .order_by(e.c.server_seq)
            )
        )


SPENDS = {Kind.SALE_COMMITTED.value, Kind.WALLET_PAID_OUT.value}


def overdraft_bounds(store: ServerStore) -> tuple[set[tuple[str, str]], list[str]]:
    """Replays the server's events in server order: the (customer, program) pairs a spend
    (points or wallet money, at a sale or a payout) took below zero, and every spend that
    went below what the offline limits allow. A spend another till could not
    see is at most a day's per-card limit per till and day; debits that are no spend
    (refunds, adjustments, referrals taken back) can take a balance further down, so they
    are added to the bound."""
    balance: dict[tuple[str, str, str], int] = {}
    other_debits: dict[tuple[str, str, str], int] = {}
    days: dict[str, set[str]] = {}
    rows = server_events(store)
    for row in rows:
        if row.customer_id:
            days.setdefault(row.customer_id, set()).add(str(row.at)[:10])
    overdrawn: set[tuple[str, str]] = set()
    problems: list[str] = []
    for row in rows:
        if not row.customer_id:
            continue
        for p in json.loads(row.payload)["p"]:
            if p["unit"] not in ("points", "money"):
                continue
            key = (row.customer_id, p["program"], p["unit"])
            delta = int(p["delta"])
            balance[key] = balance.get(key, 0) + delta
            if delta >= 0:
                continue
            if row.kind not in SPENDS:
                other_debits[key] = other_debits.get(key, 0) - delta
                continue
            if balance[key] < 0:  # a spend below zero: flagged, points or wallet money
                overdrawn.add(key[:2])
            limit = (
                LIMITS.points_per_card_per_day
                if p["unit"] == "points"
                else LIMITS.wallet_per_card_per_day
            )
            floor = -(TILLS * limit * len(days[row.customer_id]) + other_debits.get(key, 0))
            if balance[key] < floor:
                problems.append(f"{key}: {balance[key]} < {floor} after a {row.kind}")
    return overdrawn, problems


def reconciles(till: Till, event_id: str) -> bool:
    """Whether ``event_id`` is a local-only event of this till booking an expiry's difference."""
    with till.service.ledger.reader() as tx:
        ev = tx.event(event_id)
    return (
        ev is not None
        and ev.terminal_id == till.terminal_id
        and ev.kind is Kind.ACCOUNT_ADJUSTED
        and "reconciles" in ev.data
    )


def check_converged(store: ServerStore, world: World, tills: list[Till]) -> None:
    server = nonzero(store.balances("m1"))
    union: set[str] = set()
    tables = [side_tables(till) for till in tills]
    for till, got in zip(tills, tables, strict=True):
        assert nonzero(till_balances(till)) == server, till.terminal_id
        report = verify(till.service.ledger)
        assert report.ok, (till.terminal_id, report.problems)
        assert till.replica.waiting() == 0, till.terminal_id
        for name, rows in got.items():
            assert rows == tables[0][name], (name, till.terminal_id, tills[0].terminal_id)
        union |= event_ids(till)
    # A coupon used or withdrawn anywhere is used everywhere, the server's first uses too.
    usage = [coupon_usage(till) for till in tills]
    assert all(u == usage[0] for u in usage), usage
    with store.engine.connect() as conn:
        first_uses = {
            f"coupon:{r.serial}"
            for r in conn.execute(
                select(schema.coupon_uses.c.serial).where(schema.coupon_uses.c.merchant_id == "m1")
            )
        }
    assert first_uses == {k for k, v in usage[0].items() if v > 0}
    ids = store.event_ids("m1")
    assert len(ids) == len(set(ids))
    # The server holds exactly the union, except local-only events (an expiry another
    # till recorded first: the difference, booked by the till that lost) it never serves.
    assert set(ids) <= union
    for extra in union - set(ids):
        assert any(reconciles(till, extra) for till in tills), extra
    overdrawn, problems = overdraft_bounds(store)
    assert not problems, problems
    flagged = {(r["customer_id"], r["program"]) for r in store.overdrafts("m1")}
    assert overdrawn <= flagged


@pytest.fixture(params=["sqlite", "postgres"])
def server_db(request: pytest.FixtureRequest) -> Callable[[Path], str]:
    """A new, empty server database per example: a SQLite file in the example's folder, or
    a database of its own on the test PostgreSQL server."""
    if request.param == "sqlite":
        return lambda root: f"sqlite:///{root / 'server.sqlite'}"
    pg: Postgres = request.getfixturevalue("postgres")
    return lambda _root: pg.new_database()


def after_bootstrap(world: World, late: Till) -> None:
    """The bootstrapped till sells to every customer (using their offers and a coupon each
    where they hold one: what it knows from the snapshot), enrols a customer referred by
    the first one and sells to them (first purchase); after a sync, those sales are refunded
    in full or in part, at the new till and at the others."""
    world.tills.append(late)  # the ops below may run at any of them
    sales: list[str] = []
    earlier = list(world.receipts)
    referrer = world.customers[0]
    try:
        got = late.service.enrol(
            Profile(name="late-referred", referral_code=referrer.referral_code), world.tick()
        )
        world.customers.append(
            Customer(got["card"]["code"], got["customer_id"], got["referral_code"])
        )
    except DomainError as exc:
        event(f"late enrol: {exc.code}")
    for n, customer in enumerate(world.customers):
        own = [code for owner, code in world.coupons if owner == customer.id]
        codes = (own[n % len(own)],) if own else ()
        for attempt in (codes, ()):
            try:
                done = commit(
                    late,
                    customer.card,
                    f"L-{n}",
                    basket("coupon_sale", n, 0, attempt),
                    world.tick(),
                )
            except DomainError as exc:
                event(f"late sale: {exc.code}")  # the coupon is used or expired: without it
                continue
            sales.append(f"L-{n}")
            world.sold(f"L-{n}", customer.id, done)
            break
    sync_all(world, rounds=1, tills=[late, *world.tills[:-1]])
    # The old tills refund sales made before the snapshot (the new till pulls refunds of
    # sales it does not hold: their withdrawn coupons count as used there too); every till
    # refunds some of the new till's sales.
    before = [(n % (len(world.tills) - 1), r) for n, r in enumerate(earlier[::2])]
    after = [(n % len(world.tills), r) for n, r in enumerate(sales)]
    for n, (t, receipt) in enumerate(before + after):
        till = world.tills[t]
        lines = None if n % 3 else (RefundRequestLine("latte", 1),)
        try:
            till.service.refund(RefundRequest(f"LF-{n}", receipt, lines, world.tick(), {"n": n}))
        except DomainError as exc:
            event(f"late refund: {exc.code}")
    world.tills.pop()


def run_scenario(server_db: Callable[[Path], str], ops: list[Op]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = ServerStore(server_db(root))
        tills = [make_till(root, f"t{i}") for i in range(TILLS)]
        late = make_till(root, "t-boot")
        try:
            with TestClient(create_server_app(store, rate=1e6, burst=10**6)) as http:
                for till in (*tills, late):
                    pair_till(store, till, URL, http=http)
                world = World(tills, http)
                for i in range(2):  # two customers every till knows, one referred by the other
                    ref = world.customers[0].referral_code if world.customers else None
                    got = tills[0].service.enrol(
                        Profile(name=f"first{i}", referral_code=ref), world.tick()
                    )
                    world.customers.append(
                        Customer(got["card"]["code"], got["customer_id"], got["referral_code"])
                    )
                sync_all(world, rounds=1)
                for op in ops:
                    run_op(world, op)
                for till in tills:
                    till.online = True
                sync_all(world)
                check_converged(store, world, tills)

                # A new till starts from the server's snapshot and syncs.
                creds = late.replica.credentials()
                assert creds is not None
                bootstrap(late.replica, creds, http=http, page=2)
                late.online = True
                sync_round(late, http=http)
                everyone = [*tills, late]
                check_converged(store, world, everyone)
                after_bootstrap(world, late)
                sync_all(world, tills=[late, *tills])
                check_converged(store, world, everyone)
        finally:
            for till in (*tills, late):
                till.service.ledger.close()
            store.close()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=OPS)
# A big sale issues a coupon and an offer; it is refunded in full at another till after a
# sync while the customer's referrer was rewarded; the coupon is used offline elsewhere.
@example(
    ops=[
        (1, "big_sale", 1, 0),
        (1, "sync", 0, 0),
        (0, "sync", 0, 0),
        (2, "sync", 0, 0),
        (0, "refund_full", 0, 0),
        (2, "coupon_sale", 1, 0),
        (0, "payout", 0, 9),
        (0, "retry", 0, 0),
        (1, "retry", 0, 0),
    ]
)
def test_rewards_converge(server_db: Callable[[Path], str], ops: list[Op]) -> None:
    run_scenario(server_db, ops)


def open_coupon_codes(till: Till, card: str) -> list[str]:
    return [r["code"] for r in till.service.lookup(card)["rewards"] if "code" in r]


def test_a_receipt_id_collision_hides_the_reward_coupon(
    server_db: Callable[[Path], str],
) -> None:
    """Two POSes choose the same receipt id at two tills: the sale at t0 is big and issues a
    reward coupon. Found by the property above: at commit 31442f1, t1 (which holds its own
    sale "R-1") took none of the pulled sale's side tables (``side_table_problem``
    ``receipt_key_taken``: only its uses), so the customer's coupon was listed at t0 (and at
    a till bootstrapped from the server) but never at t1."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = ServerStore(server_db(root))
        t0, t1 = make_till(root, "t0"), make_till(root, "t1")
        try:
            with TestClient(create_server_app(store, rate=1e6, burst=10**6)) as http:
                for till in (t0, t1):
                    pair_till(store, till, URL, http=http)
                card = t0.service.enrol(Profile(name="Eve"))["card"]["code"]
                for till in (t0, t1):
                    sync_round(till, http=http)
                now = datetime.now(UTC)
                commit(t1, card, "R-1", basket("sale", 0, 0), now)
                sold = commit(t0, card, "R-1", basket("big_sale", 0, 0), now)
                code = next(i["code"] for i in sold["issued"] if i["kind"] == "coupon")
                for _ in range(2):
                    for till in (t0, t1):
                        sync_round(till, http=http)
                assert nonzero(till_balances(t0)) == nonzero(till_balances(t1))
                assert code in open_coupon_codes(t0, card)
                assert code in open_coupon_codes(t1, card)
        finally:
            for till in (t0, t1):
                till.service.ledger.close()
            store.close()
