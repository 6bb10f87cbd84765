"""The plugin API (DESIGN.md) through real HTTP on a real SQLite ledger, demo programs.

Time is driven by the ``at`` field: day 0 is 2025-01-01, safely in the past, so every
scenario time is accepted (a future ``at`` is refused).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote as urlquote

import pytest
from fastapi.testclient import TestClient

from pos_loyalty.domain.cardcode import make_card_code

DAY0 = datetime(2025, 1, 1, 9, 0, tzinfo=UTC)
PAN = "4111111111111111"
TRACK2 = ";4111111111111111=25121010000000000000?"
TRACK1 = "%B4111111111111111^DOE/JOHN^2512101000000000000000?"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def day(n: float, hour: int = 0) -> str:
    """ISO 8601 (with offset) for day ``n`` after 2025-01-01 09:00 UTC, plus ``hour`` hours."""
    return (DAY0 + timedelta(days=n, hours=hour)).isoformat()


def coffee(price: int = 320) -> dict[str, Any]:
    return {"sku": "espresso", "category": "coffee", "qty": 1, "unit_price": price}


def item(sku: str, price: int, qty: int = 1, category: str | None = None) -> dict[str, Any]:
    return {"sku": sku, "category": category, "qty": qty, "unit_price": price}


def head(client: TestClient) -> Any:
    r = client.get("/v1/health")
    assert r.status_code == 200
    return r.json()["head"]


def enrol(client: TestClient, at: str = day(0), **profile: Any) -> Any:
    r = client.post("/v1/customers", json={"at": at, **profile})
    assert r.status_code == 201, r.text
    return r.json()


def commit(
    client: TestClient,
    card: str | None,
    receipt: str,
    at: str,
    lines: list[dict[str, Any]],
    redeem: int | None = None,
    status: int = 200,
) -> Any:
    body: dict[str, Any] = {"receipt_id": receipt, "at": at, "lines": lines}
    if card is not None:
        body["card"] = card
    if redeem is not None:
        body["redeem"] = [{"program": "points", "points": redeem}]
    r = client.post("/v1/baskets/commit", json=body)
    assert r.status_code == status, r.text
    return r.json()


def refund(client: TestClient, body: dict[str, Any], status: int = 200) -> Any:
    r = client.post("/v1/refunds", json=body)
    assert r.status_code == status, r.text
    return r.json()


def lookup(client: TestClient, code: str, at: str) -> Any:
    r = client.get(f"/v1/cards/{code}", params={"at": at})
    assert r.status_code == 200, r.text
    return r.json()


def points(resp: dict[str, Any]) -> int:
    return int(resp["balances"]["points"]["balance"])


def stamps(resp: dict[str, Any]) -> int:
    return int(resp["balances"]["coffee-card"]["balance"])


def assert_error(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"].strip()


def history(client: TestClient, customer_id: str) -> Any:
    r = client.get(f"/v1/customers/{customer_id}", params={"limit": 200})
    assert r.status_code == 200, r.text
    return r.json()["history"]


# -- 1. the demo scenario -----------------------------------------------------------------


def test_demo_scenario(client: TestClient) -> None:
    enrolled = enrol(client)
    assert enrolled["welcome"] == {"points": 50}
    assert points(enrolled) == 50 and stamps(enrolled) == 0
    code = enrolled["card"]["code"]
    assert code.startswith("PL") and len(code) == 15
    assert enrolled["card"]["qr_svg"].lstrip().startswith("<")
    assert "<svg" in enrolled["card"]["qr_svg"]

    for visit in range(9):
        answer = commit(client, code, f"R-{visit}", day(1 + visit), [coffee()])
        assert answer["total"] == 320
        assert answer["earned"] == {"points": 3, "coffee-card": 1}
    assert stamps(answer) == 9 and points(answer) == 77
    scan = lookup(client, code, day(10))
    assert stamps(scan) == 9 and points(scan) == 77
    assert [r["program"] for r in scan["rewards"]] == ["coffee-card"]

    tenth = {
        "receipt_id": "R-10",
        "card": code,
        "at": day(11),
        "lines": [coffee(), item("croissant", 250, category="bakery")],
    }
    before = head(client)
    r = client.post("/v1/baskets/quote", json=tenth)
    assert r.status_code == 200, r.text
    quoted = r.json()
    assert head(client) == before  # a quote writes nothing
    assert quoted["total_before"] == 570
    assert quoted["total_discount"] == 320
    assert quoted["total"] == 250
    assert quoted["lines"][0]["discount"] == 320 and quoted["lines"][0]["total"] == 0
    assert quoted["lines"][1]["discount"] == 0 and quoted["lines"][1]["total"] == 250
    assert quoted["discounts"] == [
        {"program": "coffee-card", "line": 0, "amount": 320, "label": "Free coffee"}
    ]
    assert quoted["earned"] == {"points": 2}  # the free coffee earns no stamp, no points
    assert quoted["redeemed"] == {"coffee-card": 9}
    scan = lookup(client, code, day(11))
    assert stamps(scan) == 9 and points(scan) == 77

    r = client.post("/v1/baskets/commit", json=tenth)
    assert r.status_code == 200, r.text
    committed = r.json()
    assert head(client)["seq"] == before["seq"] + 1
    for key in ("total_before", "total_discount", "total", "lines", "discounts", "earned"):
        assert committed[key] == quoted[key], key
    assert stamps(committed) == 0 and points(committed) == 79
    assert committed["rewards"] == []

    big = commit(client, code, "R-11", day(12), [item("cake", 1000)], redeem=79)
    assert big["total_before"] == 1000
    assert big["total"] == 921
    assert big["redeemed"] == {"points": 79}
    assert big["earned"] == {"points": 9}
    assert points(big) == 9
    assert points(lookup(client, code, day(12))) == 9


def test_quote_balances_are_before_the_sale_at_the_quote_time(client: TestClient) -> None:
    code = enrol(client)["card"]["code"]
    body = {"card": code, "at": day(1), "lines": [coffee()]}
    r = client.post("/v1/baskets/quote", json=body)
    assert r.status_code == 200
    assert points(r.json()) == 50  # before the sale, at day 1 (the welcome lot is alive)


def test_health_names_the_till(client: TestClient) -> None:
    r = client.get("/v1/health")
    assert r.status_code == 200
    body = r.json()
    assert body["terminal_id"] == "till-1"
    assert isinstance(body["online"], bool)
    assert body["events_waiting"] == 0
    assert body["head"]["seq"] == 0
    enrol(client)
    after = client.get("/v1/health").json()
    assert after["head"]["seq"] == 2  # customer.enrolled + card.issued
    assert len(after["head"]["hash"]) == 64 and after["head"]["hash"] != body["head"]["hash"]


def test_anonymous_basket_earns_nothing_and_needs_no_card(client: TestClient) -> None:
    answer = commit(client, None, "ANON-1", day(1), [coffee()])
    assert answer["total"] == 320 and answer["earned"] == {} and answer["balances"] == {}


# -- 2. redeeming more than the balance ---------------------------------------------------


@pytest.mark.parametrize("endpoint", ["/v1/baskets/quote", "/v1/baskets/commit"])
def test_redeeming_more_than_the_balance(client: TestClient, endpoint: str) -> None:
    code = enrol(client)["card"]["code"]
    before = head(client)
    scan_before = lookup(client, code, day(1))
    body = {
        "receipt_id": "R-1",
        "card": code,
        "at": day(1),
        "lines": [item("cake", 1000)],
        "redeem": [{"program": "points", "points": 51}],
    }
    r = client.post(endpoint, json=body)
    assert_error(r, 422, "insufficient_points")
    assert head(client) == before
    assert lookup(client, code, day(1)) == scan_before
    # The receipt id was not used up: the same receipt commits fine within the balance.
    body["redeem"] = [{"program": "points", "points": 50}]
    ok = client.post("/v1/baskets/commit", json=body)
    assert ok.status_code == 200, ok.text
    assert ok.json()["total"] == 950


def test_expired_points_cannot_be_redeemed(client: TestClient) -> None:
    code = enrol(client)["card"]["code"]
    before = head(client)
    r = client.post(
        "/v1/baskets/commit",
        json={
            "receipt_id": "R-1",
            "card": code,
            "at": day(366),
            "lines": [item("cake", 1000)],
            "redeem": [{"program": "points", "points": 1}],
        },
    )
    assert_error(r, 422, "insufficient_points")
    assert head(client) == before


# -- 3. idempotency by receipt id ---------------------------------------------------------


def test_same_receipt_twice_answers_the_first_result(client: TestClient) -> None:
    code = enrol(client)["card"]["code"]
    body = {
        "receipt_id": "R-1",
        "card": code,
        "at": day(1),
        "lines": [coffee(), item("croissant", 250, category="bakery")],
        "redeem": [{"program": "points", "points": 20}],
    }
    first = client.post("/v1/baskets/commit", json=body)
    assert first.status_code == 200, first.text
    after_first = head(client)
    second = client.post("/v1/baskets/commit", json=body)
    assert second.status_code == 200
    assert second.json() == first.json()
    assert head(client) == after_first

    # Key order and white space do not make a different body.
    reordered = {
        "redeem": [{"points": 20, "program": "points"}],
        "lines": [
            {"unit_price": ln["unit_price"], "qty": ln["qty"], "category": ln["category"], **ln}
            for ln in body["lines"]
        ],
        "at": day(1),
        "card": code,
        "receipt_id": "R-1",
    }
    text = json.dumps(reordered, indent=4, separators=(" ,  ", " :\t"))
    third = client.post(
        "/v1/baskets/commit", content=text.encode(), headers={"content-type": "application/json"}
    )
    assert third.status_code == 200, third.text
    assert third.json() == first.json()
    assert head(client) == after_first
    # The balances were changed once.
    assert points(lookup(client, code, day(1))) == 50 - 20 + 5  # 5.50 paid


@pytest.mark.parametrize(
    "change",
    [
        {"lines": [coffee(330), item("croissant", 250, category="bakery")]},
        {"lines": [coffee()]},
        {"at": day(2)},
        {"redeem": [{"program": "points", "points": 10}]},
        {"card": None},
    ],
    ids=["price", "lines", "at", "redeem", "card"],
)
def test_same_receipt_other_body_is_a_conflict(client: TestClient, change: dict[str, Any]) -> None:
    code = enrol(client)["card"]["code"]
    body = {
        "receipt_id": "R-1",
        "card": code,
        "at": day(1),
        "lines": [coffee(), item("croissant", 250, category="bakery")],
        "redeem": [{"program": "points", "points": 20}],
    }
    assert client.post("/v1/baskets/commit", json=body).status_code == 200
    before = head(client)
    scan = lookup(client, code, day(3))
    other = {**body, **change}
    if other["card"] is None:
        del other["card"], other["redeem"]
    r = client.post("/v1/baskets/commit", json=other)
    assert_error(r, 409, "receipt_conflict")
    assert head(client) == before
    assert lookup(client, code, day(3)) == scan


def test_replay_still_answers_after_the_card_was_blocked(client: TestClient) -> None:
    code = enrol(client)["card"]["code"]
    body = {"receipt_id": "R-1", "card": code, "at": day(1), "lines": [coffee()]}
    first = client.post("/v1/baskets/commit", json=body).json()
    assert client.post(f"/v1/cards/{code}/block", json={"at": day(2)}).status_code == 200
    before = head(client)
    again = client.post("/v1/baskets/commit", json=body)
    assert again.status_code == 200 and again.json() == first
    assert head(client) == before


def test_commit_needs_a_receipt_id(client: TestClient) -> None:
    before = head(client)
    r = client.post("/v1/baskets/commit", json={"at": day(1), "lines": [coffee()]})
    assert r.status_code in (400, 422)
    assert r.json()["error"]["code"] == "receipt_id_required"
    assert head(client) == before


# -- 4. refunds ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lines",
    [[item("shirt", 1000, qty=2)], [item("shirt", 1000), item("shirt", 1000)]],
    ids=["one-line-qty-2", "two-lines"],
)
def test_refund_in_two_parts_may_leave_a_negative_balance(
    client: TestClient, lines: list[dict[str, Any]]
) -> None:
    code = enrol(client)["card"]["code"]
    sale = commit(client, code, "S-1", day(1), lines)
    assert sale["earned"] == {"points": 20}
    assert points(sale) == 70

    first = refund(
        client,
        {
            "refund_id": "F-1",
            "receipt_id": "S-1",
            "lines": [{"sku": "shirt", "qty": 1}],
            "at": day(2),
        },
    )
    assert first["amount"] == 1000
    assert first["reversed"] == {"points": 10}
    assert first["returned"] == {}
    assert points(first) == 60

    # The customer spends everything that is left.
    spend = commit(client, code, "S-2", day(3), [item("bag", 60)], redeem=60)
    assert spend["total"] == 0 and spend["earned"] == {}
    assert points(spend) == 0

    second = refund(
        client,
        {
            "refund_id": "F-2",
            "receipt_id": "S-1",
            "lines": [{"sku": "shirt", "qty": 1}],
            "at": day(4),
        },
    )
    assert second["amount"] == 1000
    assert second["reversed"] == {"points": 10}
    assert points(second) == -10
    assert points(lookup(client, code, day(5))) == -10

    # Nothing is left to refund on that receipt.
    before = head(client)
    r = client.post(
        "/v1/refunds",
        json={"refund_id": "F-3", "receipt_id": "S-1", "lines": [{"sku": "shirt", "qty": 1}]},
    )
    assert 400 <= r.status_code < 500
    assert r.json()["error"]["code"] == "refund_exceeds_sale"
    r = client.post("/v1/refunds", json={"refund_id": "F-4", "receipt_id": "S-1", "full": True})
    assert 400 <= r.status_code < 500
    assert r.json()["error"]["code"] == "already_refunded"
    assert head(client) == before

    # A later sale repays the debt first.
    later = commit(client, code, "S-3", day(6), [item("cake", 1500)])
    assert later["earned"] == {"points": 15}
    assert points(later) == 5


def test_full_refund_gives_spent_points_back_and_takes_earned_off(client: TestClient) -> None:
    code = enrol(client)["card"]["code"]
    sale = commit(client, code, "S-1", day(1), [item("cake", 1000)], redeem=50)
    assert sale["total"] == 950 and sale["earned"] == {"points": 9}
    assert points(sale) == 9
    body = {"refund_id": "F-1", "receipt_id": "S-1", "full": True, "at": day(2)}
    answer = refund(client, body)
    assert answer["amount"] == 950  # the money paid; the points come back as points
    assert answer["returned"] == {"points": 50}
    assert answer["reversed"] == {"points": 9}
    assert points(answer) == 50
    assert answer["lines"] == [{"sku": "cake", "qty": 1}]

    # Idempotent by refund_id.
    before = head(client)
    again = client.post("/v1/refunds", json=body)
    assert again.status_code == 200 and again.json() == answer
    assert head(client) == before
    other = client.post("/v1/refunds", json={**body, "at": day(3)})
    assert_error(other, 409, "receipt_conflict")
    assert head(client) == before
    assert points(lookup(client, code, day(3))) == 50


def test_refund_of_stamp_sales_moves_stamps_both_ways(client: TestClient) -> None:
    code = enrol(client)["card"]["code"]
    for n in range(9):
        commit(client, code, f"C-{n}", day(1 + n * 0.01), [coffee()])
    free = commit(
        client, code, "C-FREE", day(2), [coffee(), item("croissant", 250, category="bakery")]
    )
    assert stamps(free) == 0 and free["total"] == 250
    back = refund(client, {"refund_id": "F-1", "receipt_id": "C-FREE", "full": True, "at": day(3)})
    assert back["amount"] == 250
    assert back["returned"].get("coffee-card") == 9
    assert stamps(back) == 9
    assert points(back) == 77
    paid = refund(
        client,
        {
            "refund_id": "F-2",
            "receipt_id": "C-0",
            "lines": [{"sku": "espresso", "qty": 1}],
            "at": day(3),
        },
    )
    assert paid["reversed"] == {"points": 3, "coffee-card": 1}
    assert stamps(paid) == 8 and points(paid) == 74


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"refund_id": "F", "receipt_id": "nope", "full": True}, 404, "unknown_receipt"),
        (
            {"refund_id": "F", "receipt_id": "nope", "lines": [{"sku": "shirt", "qty": 1}]},
            404,
            "unknown_receipt",
        ),
        (
            {"refund_id": "F", "receipt_id": "S-1", "lines": [{"sku": "shirt", "qty": 3}]},
            422,
            "refund_exceeds_sale",
        ),
        (
            {"refund_id": "F", "receipt_id": "S-1", "lines": [{"sku": "socks", "qty": 1}]},
            422,
            "unknown_line",
        ),
        (
            {
                "refund_id": "F",
                "receipt_id": "S-1",
                "lines": [{"sku": "shirt", "qty": 2}, {"sku": "shirt", "qty": 1}],
            },
            422,
            "refund_exceeds_sale",
        ),
        (
            {
                "refund_id": "F",
                "receipt_id": "S-1",
                "full": True,
                "lines": [{"sku": "shirt", "qty": 1}],
            },
            422,
            "invalid_request",
        ),
        ({"refund_id": "F", "receipt_id": "S-1"}, 422, "invalid_request"),
        (
            {
                "refund_id": "F",
                "receipt_id": "S-1",
                "full": True,
                "at": "2999-01-01T00:00:00+00:00",
            },
            422,
            "at_in_future",
        ),
    ],
    ids=[
        "unknown-receipt-full",
        "unknown-receipt-lines",
        "more-than-sold",
        "unknown-sku",
        "more-than-sold-in-two-items",
        "lines-and-full",
        "neither",
        "future",
    ],
)
def test_refund_refusals(client: TestClient, body: dict[str, Any], status: int, code: str) -> None:
    card = enrol(client)["card"]["code"]
    commit(client, card, "S-1", day(1), [item("shirt", 1000, qty=2)])
    before = head(client)
    r = client.post("/v1/refunds", json=body)
    assert_error(r, status, code)
    assert head(client) == before
    # The refund id was not used up by the refusal.
    ok = refund(client, {"refund_id": "F", "receipt_id": "S-1", "full": True, "at": day(2)})
    assert ok["amount"] == 2000 and points(ok) == 50


# -- 5. expiry ----------------------------------------------------------------------------


def test_points_earned_on_day_0_are_gone_on_day_366(client: TestClient) -> None:
    enrolled = enrol(client)  # 50 welcome points, day 0
    code, customer = enrolled["card"]["code"], enrolled["customer_id"]
    commit(client, code, "S-0", day(0, hour=1), [item("cake", 1000)])  # +10 on day 0
    assert points(lookup(client, code, day(364))) == 60
    soon = lookup(client, code, day(350))["expiring_soon"]
    assert sum(e["points"] for e in soon) == 60
    assert points(lookup(client, code, day(366))) == 0

    assert not [e for e in history(client, customer) if e["kind"] == "points.expired"]
    sale = commit(client, code, "S-366", day(366), [item("cake", 100)])
    assert points(sale) == 1  # only what this sale earned
    expired = [e for e in history(client, customer) if e["kind"] == "points.expired"]
    assert expired, "a commit after expiry records the expiry"
    assert sum(c["delta"] for e in expired for c in e["changes"]) == -60
    assert all(c["program"] == "points" for e in expired for c in e["changes"])

    # A second write later records no second expiry of the same lots.
    commit(client, code, "S-367", day(367), [item("cake", 100)])
    again = [e for e in history(client, customer) if e["kind"] == "points.expired"]
    assert len(again) == len(expired)
    assert points(lookup(client, code, day(367))) == 2


def test_soonest_expiring_lot_is_used_first(client: TestClient) -> None:
    code = enrol(client)["card"]["code"]  # lot A: 50 points, day 0, expires day 365
    commit(client, code, "S-100", day(100), [item("cake", 3000)])  # lot B: 30, expires day 465
    assert points(lookup(client, code, day(150))) == 80
    spend = commit(client, code, "S-200", day(200), [item("bag", 40)], redeem=40)
    assert spend["total"] == 0 and spend["earned"] == {}
    assert points(spend) == 40
    # Lot A had 10 left, lot B all 30: so 30 are left after day 365 and none after day 465.
    assert points(lookup(client, code, day(364))) == 40
    assert points(lookup(client, code, day(366))) == 30
    assert points(lookup(client, code, day(464))) == 30
    assert points(lookup(client, code, day(466))) == 0


# -- 6. cards -----------------------------------------------------------------------------


def test_unknown_cards_are_404(client: TestClient) -> None:
    unknown = make_card_code("PL", 12345)
    for code in (unknown, "PL123", "hello", "PL0000000000001"):
        assert_error(client.get(f"/v1/cards/{urlquote(code, safe='')}"), 404, "unknown_card")
        assert_error(client.post("/v1/cards/lookup", json={"code": code}), 404, "unknown_card")
    assert_error(client.get(f"/v1/cards/{unknown}/qr.png"), 404, "unknown_card")
    assert_error(client.post(f"/v1/cards/{unknown}/block", json={}), 404, "unknown_card")


def test_card_lookup_accepts_the_code_as_scanned(client: TestClient) -> None:
    code = enrol(client)["card"]["code"]
    for scanned in (code, code.lower(), f" {code} "):
        r = client.post("/v1/cards/lookup", json={"code": scanned, "at": day(1)})
        assert r.status_code == 200, (scanned, r.text)
        assert r.json()["card"]["code"] == code


def _ledger_bytes(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(data_dir.iterdir()) if p.is_file())


def test_payment_card_data_is_refused_and_never_logged(
    client: TestClient, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    code = enrol(client)["card"]["code"]
    caplog.set_level(logging.DEBUG)
    before = head(client)
    answers = [
        client.get(f"/v1/cards/{PAN}"),
        client.get(f"/v1/cards/{urlquote(TRACK2, safe='')}"),
        client.get(f"/v1/cards/{PAN}", params={"at": day(1)}),
        client.post("/v1/cards/lookup", json={"code": TRACK1}),
        client.post("/v1/cards/lookup", json={"code": TRACK2}),
        client.post("/v1/cards/lookup", json={"code": "4111 1111 1111 1111"}),
        client.post(
            "/v1/baskets/commit",
            json={"receipt_id": "P-1", "card": TRACK2, "at": day(1), "lines": [coffee()]},
        ),
        client.post("/v1/baskets/quote", json={"card": PAN, "lines": [coffee()]}),
        client.post(f"/v1/cards/{PAN}/block", json={}),
        client.post(f"/v1/cards/{PAN}/replace", json={}),
        client.get(f"/v1/cards/{PAN}/qr.png"),
    ]
    for r in answers:
        assert_error(r, 422, "payment_card_rejected")
        assert PAN not in r.text and "4111" not in r.text
    assert head(client) == before
    # The client side (httpx, the POS's own HTTP library) logs request URLs; the plugin's
    # records are everything else.
    plugin_records = [
        rec for rec in caplog.records if not rec.name.startswith(("httpx", "httpcore"))
    ]
    for rec in plugin_records:
        text = rec.getMessage() + repr(rec.args) + str(rec.exc_info or "")
        assert "4111111111111111" not in text and "41111111" not in text, rec.name
    assert b"4111111111111111" not in _ledger_bytes(tmp_path)
    # The real card still works.
    assert client.get(f"/v1/cards/{code}").status_code == 200


def test_block_and_replace(client: TestClient) -> None:
    enrolled = enrol(client)
    code, customer = enrolled["card"]["code"], enrolled["customer_id"]
    commit(client, code, "S-1", day(1), [coffee(), coffee()])  # 2 stamps, 56 points

    r = client.post(f"/v1/cards/{code}/block", json={"reason": "lost", "at": day(2)})
    assert r.status_code == 200, r.text
    assert r.json()["card"]["status"] == "blocked"
    scan = lookup(client, code, day(2))
    assert scan["card"]["status"] == "blocked"
    before = head(client)
    for endpoint in ("/v1/baskets/commit", "/v1/baskets/quote"):
        r = client.post(
            endpoint, json={"receipt_id": "S-2", "card": code, "at": day(3), "lines": [coffee()]}
        )
        assert_error(r, 422, "card_blocked")
    assert head(client) == before

    # Replace the other card of a second customer: the new code keeps the balances.
    other = enrol(client, at=day(1))
    old = other["card"]["code"]
    commit(client, old, "O-1", day(1), [coffee(), item("cake", 1000)])
    old_scan = lookup(client, old, day(3))
    r = client.post(f"/v1/cards/{old}/replace", json={"reason": "damaged", "at": day(3)})
    assert r.status_code == 201, r.text
    new = r.json()["card"]["code"]
    assert new != old and r.json()["replaced"] == old
    new_scan = lookup(client, new, day(3))
    assert new_scan["customer"]["id"] == other["customer_id"]
    assert new_scan["balances"] == old_scan["balances"]
    assert lookup(client, old, day(3))["card"]["status"] == "blocked"
    sale = commit(client, new, "O-2", day(4), [coffee()])
    assert stamps(sale) == 2 and points(sale) == 50 + 13 + 3
    r = client.post(
        "/v1/baskets/commit",
        json={"receipt_id": "O-3", "card": old, "at": day(4), "lines": [coffee()]},
    )
    assert_error(r, 422, "card_blocked")
    assert_error(client.post(f"/v1/cards/{old}/replace", json={}), 422, "card_blocked")

    cards = client.get(f"/v1/customers/{customer}").json()["cards"]
    assert [c["status"] for c in cards] == ["blocked"]


def test_qr_png_and_svg(client: TestClient) -> None:
    enrolled = enrol(client)
    code = enrolled["card"]["code"]
    r = client.get(f"/v1/cards/{code}/qr.png")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    assert r.content.startswith(PNG_MAGIC)
    link = client.get(enrolled["card"]["qr_png"])
    assert link.status_code == 200 and link.content.startswith(PNG_MAGIC)
    svg = client.get(f"/v1/cards/{code}/qr.svg")
    assert svg.status_code == 200 and "<svg" in svg.text


def test_issue_card_and_adjust(client: TestClient) -> None:
    customer = enrol(client)["customer_id"]
    r = client.post(f"/v1/customers/{customer}/cards")
    assert r.status_code == 201, r.text
    second = r.json()["card"]["code"]
    assert lookup(client, second, day(1))["customer"]["id"] == customer
    r = client.post(
        f"/v1/customers/{customer}/adjustments",
        json={"program": "points", "delta": 25, "reason": "goodwill", "at": day(1)},
    )
    assert r.status_code == 201, r.text
    assert points(r.json()) == 75
    before = head(client)
    for body, code in (
        ({"program": "points", "delta": 0, "reason": "x"}, "invalid_adjustment"),
        ({"program": "nope", "delta": 1, "reason": "x"}, "unknown_program"),
        ({"program": "points", "delta": 1, "reason": "  "}, "reason_required"),
    ):
        r = client.post(f"/v1/customers/{customer}/adjustments", json=body)
        assert_error(r, 422, code)
    assert_error(
        client.post(
            "/v1/customers/nope/adjustments",
            json={"program": "points", "delta": 1, "reason": "x"},
        ),
        404,
        "unknown_customer",
    )
    assert_error(client.post("/v1/customers/nope/cards"), 404, "unknown_customer")
    assert head(client) == before
    events = history(client, customer)
    adjusted = [e for e in events if e["kind"] == "account.adjusted"]
    assert adjusted and adjusted[0]["reason"] == "goodwill"


def test_customer_profile_and_paged_history(client: TestClient) -> None:
    enrolled = enrol(client, name="Ada", email="ada@example.org", consents={"marketing": True})
    code, customer = enrolled["card"]["code"], enrolled["customer_id"]
    for n in range(5):
        commit(client, code, f"S-{n}", day(1 + n), [coffee()])
    r = client.get(f"/v1/customers/{customer}")
    assert r.status_code == 200
    body = r.json()
    assert body["customer"]["name"] == "Ada"
    assert body["customer"]["consents"] == {"marketing": True}
    seen: list[dict[str, Any]] = []
    before = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if before is not None:
            params["before"] = before
        page = client.get(f"/v1/customers/{customer}", params=params).json()
        seen.extend(page["history"])
        before = page["next_before"]
        if before is None:
            break
    assert len(seen) == 7  # enrolled, card issued, five sales
    assert [e["position"] for e in seen] == sorted((e["position"] for e in seen), reverse=True)
    assert sum(1 for e in seen if e["kind"] == "sale.committed") == 5
    assert_error(client.get("/v1/customers/nope"), 404, "unknown_customer")


def test_openapi_lists_every_v1_path(client: TestClient) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    paths = set(r.json()["paths"])
    routes = {
        getattr(route, "path", "")
        for route in client.app.routes  # type: ignore[attr-defined]
        if getattr(route, "path", "").startswith("/v1")
    }
    assert routes <= paths
    contract = {
        "/v1/health",
        "/v1/customers",
        "/v1/cards/{code}",
        "/v1/baskets/quote",
        "/v1/baskets/commit",
        "/v1/refunds",
        "/v1/customers/{customer_id}",
    }
    assert contract <= paths
