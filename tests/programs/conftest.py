"""Scenario helpers: each test writes its own shop file and drives the plugin API over a real
SQLite ledger in tmp_path. Day 0 is 2025-01-01 09:00 UTC."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, cast

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from pos_loyalty.api import create_app
from pos_loyalty.bootstrap import open_service
from pos_loyalty.config import load_settings

DAY0 = datetime(2025, 1, 1, 9, 0, tzinfo=UTC)

BASE = """
[terminal]
id = "till-1"
store_id = "store-1"
[shop]
currency = "EUR"

[[programs]]
id = "coffee-card"
kind = "stamps"
label = "Coffee card"
categories = ["coffee"]
required = 9
reward_label = "Free coffee"

[[programs]]
id = "points"
kind = "points"
label = "Points"
excluded_categories = ["gift-card"]
"""


def at(days: float = 0, seconds: float = 0) -> str:
    return (DAY0 + timedelta(days=days, seconds=seconds)).isoformat()


def ln(sku: str, price: int, category: str | None = None, qty: int = 1) -> dict[str, Any]:
    return {"sku": sku, "category": category, "qty": qty, "unit_price": price}


class Shop:
    def __init__(self, client: TestClient) -> None:
        self.c = client
        self.n = 0

    def enrol(self, when: str = at(0), **profile: Any) -> dict[str, Any]:
        r = self.c.post("/v1/customers", json={"at": when, **profile})
        assert r.status_code == 201, r.text
        return cast(dict[str, Any], r.json())

    def body(
        self, card: str | None, lines: list[dict[str, Any]], when: str, **kw: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"lines": lines, "at": when, **kw}
        if card is not None:
            body["card"] = card
        return body

    def quote(
        self, card: str | None, lines: list[dict[str, Any]], when: str = at(1), **kw: Any
    ) -> Response:
        return cast(
            Response, self.c.post("/v1/baskets/quote", json=self.body(card, lines, when, **kw))
        )

    def sale(
        self, card: str | None, lines: list[dict[str, Any]], when: str = at(1), **kw: Any
    ) -> Response:
        self.n += 1
        body = self.body(card, lines, when, receipt_id=f"R-{self.n}", **kw)
        r: Response = self.c.post("/v1/baskets/commit", json=body)
        return r

    def ok(self, r: Any) -> dict[str, Any]:
        assert r.status_code == 200, r.text
        return dict(r.json())

    def refused(self, r: Any, code: str) -> dict[str, Any]:
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["code"] == code, err
        return dict(err)

    def head(self) -> int:
        return int(self.c.get("/v1/health").json()["head"]["seq"])

    def scan(self, card: str, when: str) -> dict[str, Any]:
        r = self.c.get(f"/v1/cards/{card}", params={"at": when})
        assert r.status_code == 200, r.text
        return dict(r.json())


class MakeShop(Protocol):
    """The ``shop`` fixture: a shop from ``base`` plus ``extra`` (TOML text)."""

    def __call__(self, extra: str, base: str = ...) -> Shop: ...


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[MakeShop]:
    opened: list[Any] = []

    def make(extra: str, base: str = BASE) -> Shop:
        path = tmp_path / f"shop{len(opened)}.toml"
        path.write_text(base + extra, encoding="utf-8")
        service = open_service(load_settings(path, data_dir=tmp_path / f"data{len(opened)}"))
        opened.append(service)
        return Shop(TestClient(create_app(service), raise_server_exceptions=False))

    yield make
    for service in opened:
        service.ledger.close()
