"""Writes besides sales and refunds that a POS retries after a timeout: a wallet payout, a
manual adjustment, a coupon issued by the till. With a ``request_id`` a retry answers the
first result and writes nothing (a retried payout used to pay twice); the same id with other
parameters is 409; without one every call writes, as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pos_loyalty.cli import main

from .conftest import MakeShop, Shop, at, ln

WALLET = """
[[programs]]
id = "cashback"
kind = "cashback"
label = "Cashback wallet"
percent_bp = 1000
payout = true

[[programs]]
id = "cpn"
kind = "coupon"
label = "2.00 off"
amount = 200
valid_days = 30
"""


def customer_with_wallet(s: Shop) -> tuple[str, str]:
    e = s.enrol()
    s.ok(s.sale(e["card"]["code"], [ln("tv", 10000)], at(1)))  # 10.00 in the wallet
    return str(e["customer_id"]), str(e["card"]["code"])


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("wallet/payout", {"program": "cashback", "amount": 300}, 200),
        ("adjustments", {"program": "points", "delta": 40, "reason": "goodwill"}, 201),
    ],
    ids=["payout", "adjustment"],
)
def test_a_retry_with_the_same_request_id_writes_nothing(
    shop: MakeShop,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    path: str,
    body: dict[str, Any],
    status: int,
) -> None:
    s = shop(WALLET)
    cid, card = customer_with_wallet(s)
    url = f"/v1/customers/{cid}/{path}"
    first = s.c.post(url, json={**body, "request_id": "Q-1", "at": at(2)})
    assert first.status_code == status, first.text
    head = s.head()
    retry = s.c.post(url, json={**body, "request_id": "Q-1", "at": at(2)})
    assert retry.status_code == status and retry.json() == first.json()
    assert s.head() == head  # nothing written
    other = s.c.post(url, json={**body, "request_id": "Q-1", "at": at(3)})
    assert other.status_code == 409 and other.json()["error"]["code"] == "receipt_conflict"
    # Without a request id, each call writes (the POS did not ask for a retry).
    assert s.c.post(url, json={**body, "at": at(4)}).status_code == status
    assert s.c.post(url, json={**body, "at": at(4)}).status_code == status
    assert s.head() == head + 2
    balances = s.scan(card, at(5))["balances"]
    if path == "wallet/payout":
        assert balances["cashback"]["balance"] == 1000 - 3 * 300
    else:
        assert balances["points"]["balance"] == 100 + 3 * 40
    capsys.readouterr()
    config = str(tmp_path / "shop0.toml")
    assert (
        main(["--config", config, "--data-dir", str(tmp_path / "data0"), "ledger", "verify"]) == 0
    )


def test_a_retried_coupon_issue_answers_the_first_coupon(shop: MakeShop) -> None:
    s = shop(WALLET)
    cid, card = customer_with_wallet(s)
    body = {"program": "cpn", "customer_id": cid, "at": at(2), "request_id": "C-1"}
    first = s.c.post("/v1/coupons", json=body)
    assert first.status_code == 201, first.text
    retry = s.c.post("/v1/coupons", json=body)
    assert retry.status_code == 201 and retry.json()["code"] == first.json()["code"]
    coupons = [w for w in s.scan(card, at(3))["rewards"] if w["program"] == "cpn"]
    assert len(coupons) == 1
