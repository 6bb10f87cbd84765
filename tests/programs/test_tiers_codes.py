"""Tiers and promo codes through the plugin API, with exact numbers and their edges."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pos_loyalty.cli import main
from pos_loyalty.domain.ids import LIFETIME_LOT

from .conftest import BASE, MakeShop, at, ln

TIERS = """
[[programs]]
id = "tiers"
kind = "tiers"
label = "Tiers"
[[programs.levels]]
name = "bronze"
threshold = 0
[[programs.levels]]
name = "silver"
threshold = 10000
points_multiplier_percent = 125
[[programs.levels]]
name = "gold"
threshold = 20000
points_multiplier_percent = 150
percent_off_bp = 500
"""


def test_tier_thresholds_inclusive_and_current_sale_counts(shop: MakeShop) -> None:
    s = shop(TIERS)
    card = s.enrol()["card"]["code"]
    first = s.ok(s.sale(card, [ln("cake", 9999)]))  # one minor unit short of silver
    assert first["tier"] == "bronze" and first["earned"] == {"points": 99}
    # 1 more: 10000 exactly -> silver, and this very sale earns at x1.25: 1 * 125 // 100 = 1
    second = s.ok(s.sale(card, [ln("cake", 1)], at(2)))
    assert second["tier"] == "silver" and second["earned"] == {}
    third = s.ok(s.sale(card, [ln("cake", 1000)], at(3)))
    assert third["tier"] == "silver"
    assert third["earned"] == {"points": 12}  # trunc(1000 * 1 * 125 / (100 * 100)) = 12
    assert s.scan(card, at(3))["tier"] == "silver"
    # 11000 so far; a 9000 sale reaches gold with itself: 5% off, x1.5 on what is paid
    gold = s.ok(s.sale(card, [ln("tv", 9000)], at(4)))
    assert gold["tier"] == "gold"
    assert gold["total_discount"] == 450 and gold["total"] == 8550
    assert gold["earned"] == {"points": 128}  # 8550 * 150 // 10000
    assert s.scan(card, at(5))["tier"] == "gold"


def test_refund_reverses_tier_spend_and_tier_in_every_answer(shop: MakeShop) -> None:
    s = shop(TIERS.replace('downgrade = "never"', ""))
    card = s.enrol()["card"]["code"]
    assert s.enrol(at(0))["tier"] == "bronze"
    s.ok(s.sale(card, [ln("a", 6000), ln("b", 4000)]))
    r = s.c.post(
        "/v1/refunds",
        json={"refund_id": "F1", "receipt_id": "R-1", "lines": [{"sku": "b", "qty": 1}]},
    )
    assert r.status_code == 200, r.text
    # never-downgrade: silver reached stays; spend is 6000 now: 4000 more needed for silver
    assert r.json()["tier"] == "silver"
    anon = s.ok(s.quote(None, [ln("a", 100)]))
    assert anon["tier"] is None


def _lots(data_dir: Path, program: str) -> list[tuple[object, int]]:
    with sqlite3.connect(data_dir / "ledger.sqlite") as db:
        query = "SELECT lot, remaining FROM lots WHERE program = ? ORDER BY lot"
        return list(db.execute(query, (program,)))


def test_lifetime_spend_is_one_lot_per_customer_however_many_visits(
    shop: MakeShop, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = shop(TIERS)
    card = s.enrol()["card"]["code"]
    for n in range(40):
        s.ok(s.sale(card, [ln("a", 200), ln("b", 50)], at(1 + n)))
    # One row for all 40 sales' spend (it never expires), not one per sale.
    assert _lots(tmp_path / "data0", "tiers") == [(LIFETIME_LOT, 40 * 250)]
    assert s.scan(card, at(41))["tier"] == "silver"  # 10000 reached
    r = s.c.post(
        "/v1/refunds",
        json={"refund_id": "F1", "receipt_id": "R-7", "lines": [{"sku": "a", "qty": 1}]},
    )
    assert r.status_code == 200, r.text
    assert _lots(tmp_path / "data0", "tiers") == [(LIFETIME_LOT, 40 * 250 - 200)]
    s.ok(s.sale(card, [ln("c", 200)], at(42)))
    assert _lots(tmp_path / "data0", "tiers") == [(LIFETIME_LOT, 40 * 250)]
    # The projection is what a rebuild from the events gives.
    capsys.readouterr()
    config = str(tmp_path / "shop0.toml")
    assert (
        main(["--config", config, "--data-dir", str(tmp_path / "data0"), "ledger", "verify"]) == 0
    )


def test_points_that_never_expire_are_one_lot_per_customer(shop: MakeShop, tmp_path: Path) -> None:
    # The base file's points program (1 point per 1.00), set never to expire.
    s = shop("", base=BASE.replace('label = "Points"', 'label = "Points"\nexpiry_days = 0'))
    card = s.enrol()["card"]["code"]
    for n in range(30):
        s.ok(s.sale(card, [ln("cake", 1000)], at(1 + n)))
    assert _lots(tmp_path / "data0", "points") == [(LIFETIME_LOT, 300)]
    paid = s.ok(
        s.sale(card, [ln("cake", 1000)], at(40), redeem=[{"program": "points", "points": 120}])
    )
    assert paid["redeemed"] == {"points": 120} and paid["earned"] == {"points": 8}
    assert _lots(tmp_path / "data0", "points") == [(LIFETIME_LOT, 188)]
    # Refunding an early sale takes its 10 points back from the lifetime lot.
    r = s.c.post("/v1/refunds", json={"refund_id": "F1", "receipt_id": "R-3", "full": True})
    assert r.status_code == 200, r.text
    assert r.json()["balances"]["points"]["balance"] == 178
    assert _lots(tmp_path / "data0", "points") == [(LIFETIME_LOT, 178)]
    config = str(tmp_path / "shop0.toml")
    assert (
        main(["--config", config, "--data-dir", str(tmp_path / "data0"), "ledger", "verify"]) == 0
    )


def test_points_that_expire_keep_a_lot_per_sale(shop: MakeShop, tmp_path: Path) -> None:
    s = shop("")  # the base file's points program: they expire 365 days after (the default)
    card = s.enrol()["card"]["code"]
    for n in range(3):
        s.ok(s.sale(card, [ln("cake", 1000)], at(1 + n)))
    lots = _lots(tmp_path / "data0", "points")
    assert sorted(left for _, left in lots) == [10, 10, 10]
    assert LIFETIME_LOT not in {lot for lot, _ in lots}


def test_rolling_window_spend_keeps_a_lot_per_sale(shop: MakeShop, tmp_path: Path) -> None:
    s = shop(
        TIERS.replace('label = "Tiers"', 'label = "Tiers"\nwindow = "rolling"\nwindow_days = 30')
    )
    card = s.enrol()["card"]["code"]
    for n in range(3):
        s.ok(s.sale(card, [ln("a", 100)], at(1 + n)))
    lots = _lots(tmp_path / "data0", "tiers")
    assert len(lots) == 3 and LIFETIME_LOT not in {lot for lot, _ in lots}


def test_rolling_window_with_window_downgrade(shop: MakeShop) -> None:
    s = shop(
        TIERS.replace(
            'label = "Tiers"',
            'label = "Tiers"\nwindow = "rolling"\nwindow_days = 30\ndowngrade = "window"',
        )
    )
    card = s.enrol()["card"]["code"]
    assert s.ok(s.sale(card, [ln("a", 10000)], at(1)))["tier"] == "silver"
    assert s.scan(card, at(31, -1))["tier"] == "silver"  # last second of the window
    assert s.scan(card, at(31))["tier"] == "bronze"  # spend left the window, tier re-evaluated


PROMO = """
[[programs]]
id = "take5"
kind = "promo_code"
label = "5.00 off"
code = "TAKE5"
amount = 500
min_amount = 3000
max_uses = 2
max_uses_per_customer = 1
valid_until = 2025-01-31T23:59:59+00:00

[[programs]]
id = "bakery10"
kind = "promo_code"
label = "10% bakery"
code = "BAKE10"
percent_bp = 1000
categories = ["bakery"]
min_qty = 2
"""


def test_promo_code_amount_and_rejections(shop: MakeShop) -> None:
    s = shop(PROMO)
    card = s.enrol()["card"]["code"]
    before = s.head()
    err = s.refused(s.quote(card, [ln("a", 2999)], codes=["TAKE5"]), "minimum_not_met")
    assert err["missing"] == 1
    s.refused(s.sale(card, [ln("a", 2999)], codes=["TAKE5"]), "minimum_not_met")
    s.refused(s.sale(card, [ln("a", 3000)], codes=["NOPE"]), "unknown_code")
    s.refused(
        s.sale(card, [ln("a", 3000)], at(30, 15 * 3600 - 1 + 0.999), codes=["TAKE5"]),
        "code_expired",
    )
    s.refused(s.sale(card, [ln("a", 3000)], codes=["BAKE10"]), "not_eligible")
    assert s.head() == before  # rejections change nothing
    done = s.ok(s.sale(card, [ln("a", 3000)], at(30, 14 * 3600 + 59 * 60 + 59), codes=["take5"]))
    assert done["total"] == 2500 and done["discounts"][0]["program"] == "take5"
    assert done["earned"] == {"points": 25}  # earns on what was paid
    s.refused(s.sale(card, [ln("a", 3000)], at(2), codes=["TAKE5"]), "code_used_up")
    other = s.enrol()["card"]["code"]
    s.ok(s.sale(other, [ln("a", 3000)], at(2), codes=["TAKE5"]))
    third = s.enrol()["card"]["code"]  # two uses in total: used up for everybody
    s.refused(s.quote(third, [ln("a", 3000)], at(2), codes=["TAKE5"]), "code_used_up")


def test_percent_code_on_category_with_min_qty(shop: MakeShop) -> None:
    s = shop(PROMO)
    card = s.enrol()["card"]["code"]
    err = s.refused(
        s.quote(card, [ln("bun", 255, "bakery"), ln("x", 1000)], codes=["BAKE10"]),
        "minimum_not_met",
    )
    assert err["missing_qty"] == 1
    q = s.ok(s.quote(card, [ln("bun", 255, "bakery", 2), ln("x", 1000)], codes=["BAKE10"]))
    assert q["total_discount"] == 51  # trunc(510 * 10%)
    assert q["lines"][0]["discount"] == 51 and q["lines"][1]["discount"] == 0
