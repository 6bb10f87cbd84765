"""What a sale handed out, used once and taken back with the sale: next-visit offers,
reward coupons, referral rewards, per-visit stamps, member prices inside bundles, and the
offline limit as the quote tells it. Each case was a bug found by driving the API as a
shop would (see the 2026-12-06 stop note); the ledger verifies after each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pos_loyalty.cli import main

from .conftest import BASE, MakeShop, Shop, at, ln


def verified(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``ledger verify`` of the first shop: the projections are what the events give."""
    capsys.readouterr()
    config = str(tmp_path / "shop0.toml")
    assert (
        main(["--config", config, "--data-dir", str(tmp_path / "data0"), "ledger", "verify"]) == 0
    )


def full_refund(s: Shop, receipt: str, when: str, refund_id: str = "F1") -> dict[str, Any]:
    r = s.c.post(
        "/v1/refunds",
        json={"refund_id": refund_id, "receipt_id": receipt, "full": True, "at": when},
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


NEXT_VISIT = """
[[programs]]
id = "nv"
kind = "next_visit"
label = "Come back soon"
percent_bp = 1500
valid_days = 7
"""


def test_a_next_visit_offer_is_used_once_after_an_earlier_one_ran_out(
    shop: MakeShop, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The use named no lot and took the soonest-expiring one: the offer that had run out
    unused. The live offer then gave 15 % off a second time."""
    s = shop(NEXT_VISIT)
    card = s.enrol()["card"]["code"]
    s.ok(s.sale(card, [ln("cake", 1000)], at(0, 60)))  # offer A, until day 7
    assert s.ok(s.sale(card, [ln("cake", 1000)], at(10)))["total"] == 1000  # A ran out; B
    used = s.ok(s.sale(card, [ln("cake", 1000)], at(11)))
    assert used["total"] == 850 and used["issued"] == []
    assert [w for w in used["rewards"] if w["program"] == "nv"] == []
    again = s.ok(s.sale(card, [ln("cake", 1000)], at(12)))
    assert again["total"] == 1000, again["discounts"]
    verified(tmp_path, capsys)


COUPON = """
[[programs]]
id = "coupon-2off"
kind = "coupon"
label = "2.00 off"
amount = 200
valid_days = 30
"""


def test_a_second_coupon_of_one_program_is_refused_and_stays_valid(shop: MakeShop) -> None:
    """Both coupons used to be marked used while the program gave its 2.00 once."""
    s = shop(COUPON)
    e = s.enrol()
    card, cid = e["card"]["code"], e["customer_id"]
    codes = []
    for _ in range(2):
        r = s.c.post(
            "/v1/coupons", json={"program": "coupon-2off", "customer_id": cid, "at": at(0)}
        )
        assert r.status_code in (200, 201), r.text
        codes.append(r.json()["code"])
    before = s.head()
    err = s.refused(s.sale(card, [ln("cake", 1000)], at(1), codes=codes), "not_combinable")
    assert "2.00 off" in err["message"]
    assert s.head() == before
    first = s.ok(s.sale(card, [ln("cake", 1000)], at(2), codes=[codes[0]]))
    second = s.ok(s.sale(card, [ln("cake", 1000)], at(3), codes=[codes[1]]))
    assert first["total"] == second["total"] == 800


REWARDS = """
[[programs]]
id = "cpn"
kind = "coupon"
label = "5.00 off"
amount = 500
reward_min_spend = 5000

[[programs]]
id = "nv"
kind = "next_visit"
label = "Come back soon"
percent_bp = 1500
valid_days = 7
"""


def test_a_full_refund_withdraws_the_unused_coupon_and_offer_the_sale_issued(
    shop: MakeShop, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = shop(REWARDS)
    card = s.enrol()["card"]["code"]
    sale = s.ok(s.sale(card, [ln("tv", 2500, qty=2)], at(1)))
    assert sorted(i["kind"] for i in sale["issued"]) == ["coupon", "offer"]
    coupon = next(i["code"] for i in sale["issued"] if i["kind"] == "coupon")
    # Half back: the sale still stands, so do its rewards.
    r = s.c.post(
        "/v1/refunds",
        json={
            "refund_id": "F1",
            "receipt_id": "R-1",
            "lines": [{"sku": "tv", "qty": 1}],
            "at": at(1, 30),
        },
    )
    assert r.status_code == 200 and r.json()["withdrawn"]["coupons"] == [], r.text
    assert len(s.scan(card, at(1, 40))["rewards"]) == 2
    # The last unit back: nothing the sale handed out is left.
    back = full_refund(s, "R-1", at(1, 60), "F2")
    assert back["amount"] == 2500
    assert back["withdrawn"]["offers"] == ["nv"] and len(back["withdrawn"]["coupons"]) == 1
    assert s.scan(card, at(1, 120))["rewards"] == []
    assert s.ok(s.quote(card, [ln("cake", 1000)], at(2)))["total"] == 1000
    s.refused(s.quote(card, [ln("cake", 1000)], at(2), codes=[coupon]), "code_used_up")
    verified(tmp_path, capsys)


def test_an_offer_already_used_is_not_withdrawn_twice(shop: MakeShop) -> None:
    """The offer was spent on the next visit (that sale stands): the refund of the sale
    that issued it takes nothing more."""
    s = shop(NEXT_VISIT)
    card = s.enrol()["card"]["code"]
    s.ok(s.sale(card, [ln("cake", 1000)], at(1)))  # issues the offer
    assert s.ok(s.sale(card, [ln("cake", 1000)], at(2)))["total"] == 850  # uses it
    back = full_refund(s, "R-1", at(3))
    assert back["withdrawn"]["offers"] == []
    assert s.ok(s.quote(card, [ln("cake", 1000)], at(4)))["total"] == 1000


REFERRAL = """
[[programs]]
id = "referral"
kind = "referral"
label = "Refer a friend"
points_program = "points"
new_customer_points = 100
referrer_points = 100
trigger = "first_purchase"
min_amount = 2000
"""


def test_a_full_refund_of_the_first_purchase_takes_the_referral_back(
    shop: MakeShop, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Buying 20.00 and refunding it at once used to leave 100 points with each of them:
    referral points for nothing. The referral is re-opened: a real purchase later pays."""
    s = shop(REFERRAL)
    ada = s.enrol()
    friend = s.enrol(referral_code=ada["referral_code"])
    sale = s.ok(s.sale(friend["card"]["code"], [ln("tv", 2000)], at(1)))
    assert sale["balances"]["points"]["balance"] == 120
    assert s.scan(ada["card"]["code"], at(1, 30))["balances"]["points"]["balance"] == 100
    back = full_refund(s, "R-1", at(1, 60))
    assert back["withdrawn"]["referral"] == "referral"
    assert back["balances"]["points"]["balance"] == 0
    assert s.scan(ada["card"]["code"], at(1, 120))["balances"]["points"]["balance"] == 0
    again = s.ok(s.sale(friend["card"]["code"], [ln("tv", 2500)], at(2)))
    assert again["balances"]["points"]["balance"] == 125
    assert s.scan(ada["card"]["code"], at(2, 30))["balances"]["points"]["balance"] == 100
    verified(tmp_path, capsys)


VISIT_CARD = """
[[programs]]
id = "visit-card"
kind = "stamps"
label = "Tea visits"
categories = ["tea"]
per = "visit"
required = 5
"""


@pytest.mark.parametrize("first", ["green-tea", "black-tea"])
def test_a_visit_stamp_stays_while_a_unit_of_the_visit_is_kept(shop: MakeShop, first: str) -> None:
    """Whichever tea comes back first, the visit still counted; the stamp goes with the
    last one (it used to go with line 0 only)."""
    s = shop(VISIT_CARD)
    card = s.enrol()["card"]["code"]
    sale = s.ok(s.sale(card, [ln("green-tea", 250, "tea"), ln("black-tea", 250, "tea")], at(1)))
    assert sale["earned"]["visit-card"] == 1
    second = "black-tea" if first == "green-tea" else "green-tea"
    balances = []
    for n, sku in enumerate((first, second)):
        r = s.c.post(
            "/v1/refunds",
            json={
                "refund_id": f"F{n}",
                "receipt_id": "R-1",
                "lines": [{"sku": sku, "qty": 1}],
                "at": at(1, 60 + n),
            },
        )
        assert r.status_code == 200, r.text
        balances.append(r.json()["balances"]["visit-card"]["balance"])
    assert balances == [1, 0]


def test_an_undated_refund_of_a_sale_dated_slightly_ahead_is_taken(shop: MakeShop) -> None:
    """A POS clock a little ahead (within the allowed skew) dated the sale; refunding it at
    once without ``at`` was refused as ``refund_before_sale``."""
    s = shop("")
    card = s.enrol(when=datetime.now(UTC).isoformat())["card"]["code"]
    ahead = (datetime.now(UTC) + timedelta(seconds=120)).isoformat()
    sale = s.c.post(
        "/v1/baskets/commit",
        json={"receipt_id": "R1", "card": card, "at": ahead, "lines": [ln("latte", 320, "coffee")]},
    )
    assert sale.status_code == 200, sale.text
    r = s.c.post("/v1/refunds", json={"refund_id": "F1", "receipt_id": "R1", "full": True})
    assert r.status_code == 200, r.text
    # A refund the POS dates before its sale is still refused.
    r = s.c.post(
        "/v1/refunds",
        json={
            "refund_id": "F2",
            "receipt_id": "R1",
            "full": True,
            "at": datetime.now(UTC).isoformat(),
        },
    )
    assert r.status_code == 422 and r.json()["error"]["code"] in (
        "refund_before_sale",
        "already_refunded",
    )


def offline(points_per_card: int) -> str:
    return BASE.replace(
        "[shop]",
        '[sync]\nenabled = true\nserver_url = "http://127.0.0.1:9"\n'
        f"[offline]\npoints_per_card_per_day = {points_per_card}\n"
        "points_per_terminal_per_day = 50000\n[shop]",
    )


def test_the_quote_refuses_what_the_commit_would_for_the_offline_limit(shop: MakeShop) -> None:
    s = shop("", offline(100))
    e = s.enrol()
    card, cid = e["card"]["code"], e["customer_id"]
    adj = s.c.post(
        f"/v1/customers/{cid}/adjustments",
        json={"program": "points", "delta": 1000, "reason": "goodwill", "at": at(0, 10)},
    )
    assert adj.status_code == 201, adj.text
    body = {"card": card, "at": at(1), "lines": [ln("cake", 1000)]}
    over = {**body, "redeem": [{"program": "points", "points": 300}]}
    s.refused(s.c.post("/v1/baskets/quote", json=over), "offline_limit_exceeded")
    s.refused(
        s.c.post("/v1/baskets/commit", json={**over, "receipt_id": "R1"}),
        "offline_limit_exceeded",
    )
    within = {**body, "redeem": [{"program": "points", "points": 100}]}
    assert s.ok(s.c.post("/v1/baskets/quote", json=within))["total"] == 900


BUNDLE_AND_MEMBER = """
[[programs]]
id = "breakfast"
kind = "bundle"
label = "Coffee + pastry 4.50"
price = 450
{bundle_priority}
[[programs.components]]
categories = ["coffee"]
[[programs.components]]
categories = ["bakery"]

[[programs]]
id = "member-muffin"
kind = "member_offer"
label = "Member price"
skus = ["muffin"]
price = 250
{member_priority}
"""


@pytest.mark.parametrize("member_first", [True, False])
def test_a_member_price_does_not_undercut_a_bundle(shop: MakeShop, member_first: bool) -> None:
    """Latte 3.20 + muffin 2.90 as a 4.50 bundle; a member price of 2.50 on the muffin used
    to come off too, in either order (4.10 for a 4.50 bundle)."""
    s = shop(
        BUNDLE_AND_MEMBER.format(
            bundle_priority="priority = 50" if member_first else "priority = 10",
            member_priority="priority = 10" if member_first else "priority = 50",
        )
    )
    card = s.enrol()["card"]["code"]
    q = s.ok(s.quote(card, [ln("latte", 320, "coffee"), ln("muffin", 290, "bakery")]))
    assert q["total"] == 450, q["discounts"]
    # Without a card there is no member price: the bundle alone.
    anonymous = s.ok(s.quote(None, [ln("latte", 320, "coffee"), ln("muffin", 290, "bakery")]))
    assert anonymous["total"] == 450
    # A muffin alone still gets the member price.
    assert s.ok(s.quote(card, [ln("muffin", 290, "bakery")]))["total"] == 250


WALLET = """
[[programs]]
id = "cashback"
kind = "cashback"
label = "Cashback wallet"
percent_bp = 1000
payout = true
"""


def test_offline_wallet_money_is_bounded_like_points(
    shop: MakeShop, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Offline, 5.00 of wallet money a card a day, paid at the till or paid out: a wallet
    used to be spent in full at every offline till (DESIGN invariant 8)."""
    base = offline(5000).replace(
        "points_per_terminal_per_day = 50000\n",
        "points_per_terminal_per_day = 50000\nwallet_per_card_per_day = 500\n",
    )
    s = shop(WALLET, base)
    e = s.enrol()
    card, cid = e["card"]["code"], e["customer_id"]
    s.ok(s.sale(card, [ln("tv", 10000)], at(1)))  # 10.00 in the wallet
    pay = {"card": card, "at": at(2), "lines": [ln("cake", 1000)]}
    s.ok(s.c.post("/v1/baskets/commit", json={**pay, "receipt_id": "W1", "wallet": [
        {"program": "cashback", "amount": 300}]}))  # fmt: skip
    over = {**pay, "receipt_id": "W2", "wallet": [{"program": "cashback", "amount": 201}]}
    s.refused(s.c.post("/v1/baskets/quote", json=over), "offline_limit_exceeded")
    err = s.refused(s.c.post("/v1/baskets/commit", json=over), "offline_limit_exceeded")
    assert "2.00" in err["message"]
    payout = f"/v1/customers/{cid}/wallet/payout"
    assert (
        s.c.post(payout, json={"program": "cashback", "amount": 200, "at": at(2)}).status_code
        == 200
    )
    s.refused(
        s.c.post(payout, json={"program": "cashback", "amount": 1, "at": at(2, 60)}),
        "offline_limit_exceeded",
    )
    # The next day has its own allowance.
    assert (
        s.c.post(payout, json={"program": "cashback", "amount": 400, "at": at(3)}).status_code
        == 200
    )
    verified(tmp_path, capsys)


def test_a_stand_alone_till_spends_wallet_money_without_limit(shop: MakeShop) -> None:
    s = shop(WALLET, BASE.replace("[shop]", "[offline]\nwallet_per_card_per_day = 0\n[shop]"))
    e = s.enrol()
    s.ok(s.sale(e["card"]["code"], [ln("tv", 10000)], at(1)))
    r = s.c.post(
        f"/v1/customers/{e['customer_id']}/wallet/payout",
        json={"program": "cashback", "amount": 1000, "at": at(2)},
    )
    assert r.status_code == 200, r.text


def test_revision_0008_adds_the_wallet_rows_of_a_ledger_written_before_it(
    shop: MakeShop, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Downgraded to 0007 (no wallet column, no rows without points) and upgraded again:
    the rows come back exactly as the projection writes them, and the ledger verifies."""
    import sqlite3

    from alembic import command
    from alembic.config import Config

    from pos_loyalty.ledger.store import MIGRATIONS, make_engine

    s = shop(WALLET)
    e = s.enrol()
    card, cid = e["card"]["code"], e["customer_id"]
    s.ok(s.sale(card, [ln("tv", 10000)], at(1)))
    s.ok(s.sale(card, [ln("cake", 1000)], at(2), wallet=[{"program": "cashback", "amount": 300}]))
    s.ok(
        s.sale(
            card,
            [ln("cake", 1000)],
            at(2, 60),
            wallet=[{"program": "cashback", "amount": 100}],
            redeem=[{"program": "points", "points": 50}],
        )
    )
    s.ok(s.sale(card, [ln("pie", 1000)], at(3), redeem=[{"program": "points", "points": 20}]))
    payout = s.c.post(
        f"/v1/customers/{cid}/wallet/payout",
        json={"program": "cashback", "amount": 200, "at": at(4), "request_id": "Q-1"},
    )
    assert payout.status_code == 200, payout.text
    path = tmp_path / "data0" / "ledger.sqlite"

    def request_receipts() -> list[str]:
        conn = sqlite3.connect(path)
        try:
            return [k for (k,) in conn.execute("SELECT key FROM receipts WHERE key LIKE 'pay%'")]
        finally:
            conn.close()

    assert request_receipts() == ["payout:till-1:Q-1"]

    def redemptions() -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(path)
        try:
            return sorted(conn.execute("SELECT * FROM redemptions"))
        finally:
            conn.close()

    written = redemptions()
    assert sorted((r[4], r[5]) for r in written) == [(0, 200), (0, 300), (20, 0), (50, 100)]
    engine = make_engine(path)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0007_stub_slots")
        assert sorted(r[4] for r in redemptions()) == [20, 50]
        assert request_receipts() == []  # earlier revisions neither write nor rebuild them
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    finally:
        engine.dispose()
    assert redemptions() == written
    assert request_receipts() == ["payout:till-1:Q-1"]
    verified(tmp_path, capsys)


BUNDLE_FIRST = """
[[programs]]
id = "breakfast"
kind = "bundle"
label = "Coffee + pastry 4.50"
price = 450
priority = 10
[[programs.components]]
categories = ["coffee"]
[[programs.components]]
categories = ["bakery"]

[[programs]]
id = "member-latte"
kind = "member_offer"
label = "Member price"
skus = ["latte"]
price = 300
priority = 50
"""


@pytest.mark.parametrize(
    "lattes",
    [[ln("latte", 360, "coffee", qty=2)], [ln("latte", 360, "coffee"), ln("latte", 360, "coffee")]],
    ids=["one-line", "two-lines"],
)
def test_the_latte_outside_the_bundle_keeps_its_member_price(
    shop: MakeShop, lattes: list[dict[str, Any]]
) -> None:
    """Two lattes and a croissant: one latte goes into the 4.50 bundle, the other costs the
    member price 3.00 (7.50), however the POS splits the lines. In review: 7.84 (the bundle's
    cheap unit cancelled the member price on the whole line)."""
    s = shop(BUNDLE_FIRST)
    card = s.enrol()["card"]["code"]
    q = s.ok(s.quote(card, [*lattes, ln("croissant", 250, "bakery")]))
    assert q["total"] == 750, q["discounts"]


STAMP_FIXED = BASE.replace(
    'reward_label = "Free coffee"',
    'reward_label = "1.00 off"\nreward = "fixed_discount"\nreward_amount = 100',
)
MEMBER_LATTE = """
[[programs]]
id = "member-latte"
kind = "member_offer"
label = "Member price"
skus = ["latte"]
price = 250
"""


def test_a_stamp_reward_comes_off_the_member_price(shop: MakeShop) -> None:
    """The member price is the price; the 1.00 stamp reward comes off it: two lattes at 3.00
    with a 2.50 member price and one reward pay 4.00 (the reward is not spent for nothing)."""
    s = shop(MEMBER_LATTE, STAMP_FIXED)
    e = s.enrol()
    card, cid = e["card"]["code"], e["customer_id"]
    r = s.c.post(
        f"/v1/customers/{cid}/adjustments",
        json={"program": "coffee-card", "delta": 9, "reason": "test", "at": at(0, 5)},
    )
    assert r.status_code == 201, r.text
    without = s.ok(s.quote(card, [ln("latte", 300, "coffee", qty=2)], at(1)))
    assert without["total"] == 400, without["discounts"]


def test_a_referral_taken_back_counts_what_expired_once(
    shop: MakeShop, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The friend's 20 earned points and 100 bonus share a lot; 50 were spent, the other 70
    expired. A full refund takes back what is left of what the sale gave: 120 - 70 = 50
    (the expired points counted against the earned 20 first, as the refund of earnings
    does). In review: 30 (the expiry was counted against the bonus in full)."""
    s = shop(REFERRAL)  # points expire 365 days after they were earned
    ada = s.enrol()
    friend = s.enrol(referral_code=ada["referral_code"])
    card = friend["card"]["code"]
    assert s.ok(s.sale(card, [ln("tv", 2000)], at(1)))["balances"]["points"]["balance"] == 120
    spent = s.sale(card, [ln("pie", 5000)], at(10), redeem=[{"program": "points", "points": 50}])
    s.ok(spent)
    # 70 of the first lot expired; the 49 the second sale earned are still there
    assert s.scan(card, at(367))["balances"]["points"]["balance"] == 49
    back = full_refund(s, "R-1", at(367, 60))
    assert back["balances"]["points"]["balance"] == 49 - 50
    verified(tmp_path, capsys)


def test_a_referrer_rewarded_nothing_is_counted_back_when_taken_back(shop: MakeShop) -> None:
    """``referrer_points = 0``, +50 per earlier referral: the first friend's purchase counts
    one referral (reward 0); refunded in full, the count goes back, so the next friend's
    purchase rewards 0 again, not 50."""
    s = shop(REFERRAL.replace("referrer_points = 100", "referrer_points = 0\nreferrer_step = 50"))
    ada = s.enrol()
    one = s.enrol(referral_code=ada["referral_code"])
    two = s.enrol(referral_code=ada["referral_code"])
    s.ok(s.sale(one["card"]["code"], [ln("tv", 2000)], at(1)))
    full_refund(s, "R-1", at(1, 60))
    s.ok(s.sale(two["card"]["code"], [ln("tv", 2000)], at(2)))
    assert s.scan(ada["card"]["code"], at(2, 30))["balances"]["points"]["balance"] == 0
