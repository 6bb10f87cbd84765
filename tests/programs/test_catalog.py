"""Guards, coupons, next-visit offers, bundles, wallet, member offers, gifts, green actions,
referrals and nudges through the plugin API, with exact numbers."""

from __future__ import annotations

from pathlib import Path

from .conftest import MakeShop, at, ln

GUARDS = """
[guards]
max_discount_bp = 5000

[[programs]]
id = "half"
kind = "promo_code"
label = "40% off"
code = "BIG40"
percent_bp = 4000
priority = 20

[[programs]]
id = "more"
kind = "promo_code"
label = "20% off"
code = "MORE20"
percent_bp = 2000
priority = 30

[[programs]]
id = "solo"
kind = "promo_code"
label = "Solo 30%"
code = "SOLO30"
percent_bp = 3000
exclusive = true
priority = 40
stores = ["store-1"]

[[programs]]
id = "elsewhere"
kind = "promo_code"
label = "Other store"
code = "OTHER"
amount = 100
stores = ["store-9"]

[[programs]]
id = "trial"
kind = "green"
label = "Own cup"
flag = "own_cup"
categories = ["coffee"]
amount = 20
valid_from = 2025-01-02T09:00:00+00:00
valid_until = 2025-01-03T08:59:59+00:00
"""


def test_cap_stacking_store_scope_and_window(shop: MakeShop) -> None:
    s = shop(GUARDS)
    card = s.enrol()["card"]["code"]
    basket = [ln("a", 1000), ln("b", 999)]
    # 40% then 20% of what is left would be 52%: the cap holds it at 50% of 1999 = 999
    q = s.ok(s.quote(card, basket, codes=["BIG40", "MORE20"]))
    assert q["total_discount"] == 999 and q["total"] == 1000
    assert all(line["total"] >= 0 for line in q["lines"])
    # result does not depend on line order
    r = s.ok(s.quote(card, list(reversed(basket)), codes=["MORE20", "BIG40"]))
    assert (r["total_discount"], r["total"], r["earned"]) == (999, 1000, q["earned"])
    # an exclusive code after another promotion is skipped
    x = s.ok(s.quote(card, basket, codes=["BIG40", "SOLO30"]))
    assert [d["program"] for d in x["discounts"]] == ["half", "half"]
    only = s.ok(s.quote(card, basket, codes=["SOLO30"]))
    assert only["total_discount"] == 599
    s.refused(s.quote(card, basket, codes=["OTHER"]), "not_eligible")
    cup = [ln("latte", 300, "coffee")]
    assert s.ok(s.quote(card, cup, at(1, -1), flags=["own_cup"]))["total_discount"] == 0
    assert s.ok(s.quote(card, cup, at(1), flags=["own_cup"]))["total_discount"] == 20
    assert s.ok(s.quote(card, cup, at(2, -1), flags=["own_cup"]))["total_discount"] == 20
    assert s.ok(s.quote(card, cup, at(2), flags=["own_cup"]))["total_discount"] == 0


COUPON = """
[[programs]]
id = "coupon-2off"
kind = "coupon"
label = "2.00 off"
amount = 200
valid_days = 30
reward_min_spend = 5000
"""


def test_signed_coupon_issue_use_once_and_forgeries(shop: MakeShop, tmp_path: Path) -> None:
    s = shop(COUPON)
    enrolled = s.enrol()
    card, cid = enrolled["card"]["code"], enrolled["customer_id"]
    r = s.c.post("/v1/coupons", json={"program": "coupon-2off", "customer_id": cid, "at": at(0)})
    assert r.status_code == 201, r.text
    code = r.json()["code"]
    assert [w["code"] for w in s.scan(card, at(1))["rewards"]] == [code]
    # one character changed, or signed by another key: refused offline, nothing written
    flipped = code[:50] + ("A" if code[50] != "A" else "B") + code[51:]
    before = s.head()
    s.refused(s.sale(card, [ln("a", 1000)], codes=[flipped]), "unknown_code")
    other = shop(COUPON)
    ocid = other.enrol()["customer_id"]
    foreign = other.c.post("/v1/coupons", json={"program": "coupon-2off", "customer_id": ocid})
    s.refused(s.sale(card, [ln("a", 1000)], codes=[foreign.json()["code"]]), "unknown_code")
    stranger = s.enrol()["card"]["code"]
    s.refused(s.sale(stranger, [ln("a", 1000)], codes=[code]), "not_eligible")
    assert s.head() == before + 2  # only the stranger's enrolment (2 events)
    used = s.ok(s.sale(card, [ln("a", 1000)], at(2), codes=[code.lower()]))
    assert used["total"] == 800
    assert s.scan(card, at(3))["rewards"] == []
    s.refused(s.sale(card, [ln("a", 1000)], at(3), codes=[code]), "code_used_up")
    # a sale paying 50.00 issues a new coupon as a reward, expiring after 30 days
    big = s.ok(s.sale(card, [ln("tv", 5000)], at(4)))
    assert big["issued"][0]["kind"] == "coupon"
    fresh = big["issued"][0]["code"]
    assert [w["code"] for w in big["rewards"]] == [fresh]
    s.refused(s.quote(card, [ln("a", 1000)], at(35), codes=[fresh]), "code_expired")
    assert s.ok(s.quote(card, [ln("a", 1000)], at(34, 14 * 3600), codes=[fresh]))["total"] == 800


NEXT = """
[[programs]]
id = "next-visit"
kind = "next_visit"
label = "Come back soon"
percent_bp = 1500
valid_days = 7
"""


def test_next_visit_offer_window(shop: MakeShop) -> None:
    s = shop(NEXT)
    card = s.enrol()["card"]["code"]
    first = s.ok(s.sale(card, [ln("a", 1000)], at(1)))
    assert any("15% off your next visit" in t for t in first["receipt_text"])
    assert s.ok(s.quote(card, [ln("a", 1000)], at(8, -1)))["total"] == 850  # last second
    assert s.ok(s.quote(card, [ln("a", 1000)], at(8)))["total"] == 1000  # gone after
    used = s.ok(s.sale(card, [ln("a", 1000)], at(5)))
    assert used["total"] == 850 and used["issued"] == []
    assert s.ok(s.quote(card, [ln("a", 1000)], at(6)))["total"] == 1000  # used once


COMBOS = """
[[programs]]
id = "breakfast"
kind = "bundle"
label = "Coffee + pastry 4.50"
price = 450
[[programs.components]]
categories = ["coffee"]
[[programs.components]]
categories = ["bakery"]

[[programs]]
id = "juice"
kind = "buy_x_get_y"
label = "3 for 2"
skus = ["oj"]
buy = 2
get = 1
"""


def test_bundles_best_allocation_and_buy_x_get_y(shop: MakeShop) -> None:
    s = shop(COMBOS)
    lines = [
        ln("latte", 360, "coffee"),
        ln("espresso", 220, "coffee"),
        ln("croissant", 250, "bakery"),
        ln("muffin", 290, "bakery"),
    ]
    q = s.ok(s.quote(None, lines))
    # two bundles: (360+290-450) + (220+250-450) = 200 + 20
    assert q["total_discount"] == 220 and q["total"] == 900
    r = s.ok(s.quote(None, list(reversed(lines))))
    assert r["total_discount"] == 220
    # a pair worth less than the bundle price makes no bundle
    assert s.ok(s.quote(None, [ln("e", 200, "coffee"), ln("c", 240, "bakery")]))["total"] == 440
    juices = [ln("oj", 380, qty=2), ln("oj", 300)]
    assert s.ok(s.quote(None, juices))["total_discount"] == 300  # the cheapest of three free
    assert s.ok(s.quote(None, [ln("oj", 380, qty=2)]))["total_discount"] == 0


WALLET = """
[[programs]]
id = "cashback"
kind = "cashback"
label = "Cashback wallet"
percent_bp = 200
payout = false
"""


def test_cashback_wallet_earn_pay_refund_payout(shop: MakeShop) -> None:
    s = shop(WALLET)
    e = s.enrol()
    card, cid = e["card"]["code"], e["customer_id"]
    first = s.ok(s.sale(card, [ln("a", 5050)]))
    assert first["earned"] == {"points": 50, "cashback": 101}
    assert first["balances"]["cashback"] == {"kind": "wallet", "balance": 101, "payout": False}
    s.refused(
        s.quote(card, [ln("a", 500)], wallet=[{"program": "cashback", "amount": 102}]),
        "insufficient_funds",
    )
    paid = s.ok(
        s.sale(card, [ln("a", 500)], at(2), wallet=[{"program": "cashback", "amount": 101}])
    )
    assert paid["total"] == 399 and paid["redeemed"] == {"cashback": 101}
    assert paid["earned"] == {"points": 3, "cashback": 7}  # earned on money paid only
    r = s.c.post("/v1/refunds", json={"refund_id": "F", "receipt_id": "R-2", "full": True})
    assert r.status_code == 200, r.text
    assert r.json()["balances"]["cashback"]["balance"] == 101  # 101 - 101 + 101 + 7 - 7
    refused = s.c.post(
        f"/v1/customers/{cid}/wallet/payout", json={"program": "cashback", "amount": 1}
    )
    assert refused.json()["error"]["code"] == "payout_not_allowed"


def test_wallet_payout_when_allowed(shop: MakeShop) -> None:
    s = shop(WALLET.replace("payout = false", "payout = true"))
    e = s.enrol()
    s.ok(s.sale(e["card"]["code"], [ln("a", 10000)]))
    r = s.c.post(
        f"/v1/customers/{e['customer_id']}/wallet/payout",
        json={"program": "cashback", "amount": 200},
    )
    assert r.status_code == 200, r.text
    assert r.json()["balances"]["cashback"]["balance"] == 0


MEMBER = """
[[programs]]
id = "member-muffin"
kind = "member_offer"
label = "Member price"
skus = ["muffin"]
price = 250

[[programs]]
id = "staff"
kind = "member_offer"
label = "Staff 10%"
percent_bp = 1000
tags = ["staff"]
valid_from = 2025-01-02T00:00:00+00:00
valid_until = 2025-01-02T23:59:59+00:00
"""


def test_cardholder_exclusives_by_tag_and_window(shop: MakeShop) -> None:
    s = shop(MEMBER)
    card = s.enrol()["card"]["code"]
    staff = s.enrol(tags=["staff"])["card"]["code"]
    muffins = [ln("muffin", 290, qty=2), ln("tea", 200)]
    assert s.ok(s.quote(None, muffins))["total"] == 780  # no card, no member price
    assert s.ok(s.quote(card, muffins))["total"] == 700
    when = at(1) if False else "2025-01-02T23:59:59+00:00"
    assert s.ok(s.quote(staff, muffins, when))["total"] == 630  # 700 - 10%
    assert s.ok(s.quote(staff, muffins, "2025-01-03T00:00:00+00:00"))["total"] == 700


GIFT = """
[nudges]
spend_within = 500

[[programs]]
id = "tote"
kind = "gift"
label = "Free tote bag"
min_amount = 2500
gift_sku = "tote-bag"

[[programs]]
id = "cinema"
kind = "gift"
label = "Cinema voucher"
min_amount = 5000
vouchers = ["CIN-1"]

[[programs]]
id = "own-cup"
kind = "green"
label = "Own cup"
flag = "own_cup"
categories = ["coffee"]
amount = 20
"""


def test_gift_voucher_green_and_nudges(shop: MakeShop) -> None:
    s = shop(GIFT)
    card = s.enrol()["card"]["code"]
    short = s.ok(s.quote(card, [ln("a", 2270)]))
    assert "Spend 2.30 more for a gift" in short["nudges"]
    assert len(short["lines"]) == 1
    met = s.ok(s.quote(card, [ln("a", 2500)]))
    assert met["lines"][-1] == {
        "sku": "tote-bag",
        "qty": 1,
        "unit_price": 0,
        "discount": 0,
        "total": 0,
        "gift": "tote",
    }
    v = s.ok(s.sale(card, [ln("a", 5000)]))
    assert [i.get("code") for i in v["issued"] if i["kind"] == "voucher"] == ["CIN-1"]
    v2 = s.ok(s.sale(card, [ln("a", 5000)], at(2)))
    assert [i for i in v2["issued"] if i["kind"] == "voucher"] == []  # pool empty
    cups = s.ok(s.quote(card, [ln("latte", 300, "coffee", 2), ln("bun", 100)], flags=["own_cup"]))
    assert cups["total_discount"] == 40
    # stamps: 8 + 1 = 9 stamps now: no nudge; 7 + 1 -> "1 more stamp to a free coffee"
    for day in range(7):
        s.ok(s.sale(card, [ln("latte", 300, "coffee")], at(3 + day)))
    n = s.ok(s.quote(card, [ln("latte", 300, "coffee")], at(11)))
    assert "1 more stamp to a free coffee" in n["nudges"]


REFERRAL = """
[[programs]]
id = "referral"
kind = "referral"
label = "Refer a friend"
points_program = "points"
new_customer_points = 100
referrer_points = 100
referrer_step = 50
referrer_max = 175
"""


def test_referral_growing_reward_and_self_referral(shop: MakeShop) -> None:
    s = shop(REFERRAL)
    ada = s.enrol(email="ada@example.com")
    code = ada["referral_code"]
    assert code and code.startswith("R")
    before = s.head()
    r = s.c.post("/v1/customers", json={"referral_code": code, "email": "ADA@example.com"})
    assert r.json()["error"]["code"] == "self_referral"
    r = s.c.post("/v1/customers", json={"referral_code": "RNOPE"})
    assert r.json()["error"]["code"] == "unknown_referral_code"
    assert s.head() == before
    for expected in (100, 150, 175):
        friend = s.enrol(referral_code=code.lower())
        assert friend["welcome"] == {"points": 100}
        ada_now = s.scan(ada["card"]["code"], at(1))
        assert ada_now["balances"]["points"]["balance"] == {100: 100, 150: 250, 175: 425}[expected]


def test_referral_on_first_purchase_above_minimum(shop: MakeShop) -> None:
    s = shop(REFERRAL + 'trigger = "first_purchase"\nmin_amount = 1000\n')
    ada = s.enrol()
    friend = s.enrol(referral_code=ada["referral_code"])
    assert friend["welcome"] == {}
    fc = friend["card"]["code"]
    s.ok(s.sale(fc, [ln("a", 999)]))
    assert s.scan(ada["card"]["code"], at(2))["balances"]["points"]["balance"] == 0
    done = s.ok(s.sale(fc, [ln("a", 1000)], at(2)))
    assert done["balances"]["points"]["balance"] == 9 + 10 + 100
    assert s.scan(ada["card"]["code"], at(2))["balances"]["points"]["balance"] == 100
    s.ok(s.sale(fc, [ln("a", 1000)], at(3)))
    assert s.scan(ada["card"]["code"], at(3))["balances"]["points"]["balance"] == 100
