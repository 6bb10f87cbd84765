"""Property tests: random baskets under every example program enabled together."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pos_loyalty.api import create_app
from pos_loyalty.bootstrap import open_service
from pos_loyalty.config import embedded_default_text, load_settings


def all_enabled(tmp: Path) -> TestClient:
    text = re.sub(r"\nenabled = false\n", "\n", embedded_default_text())
    text = text.replace("[sync]\n# Send", "[sync]\nenabled = false\n# Send", 1)
    path = tmp / "all.toml"
    path.write_text(text, encoding="utf-8")
    service = open_service(load_settings(path, data_dir=tmp / "data"))
    assert len(service.programs.programs) == 17  # every example program is on
    return TestClient(create_app(service))


MENU = [
    ("espresso", "coffee", 220),
    ("latte", "coffee", 360),
    ("croissant", "bakery", 250),
    ("muffin", "bakery", 290),
    ("orange-juice", "drinks", 380),
    ("cake", None, 1000),
    ("gift-card", "gift-card", 2500),
    ("free", None, 0),
]
line = st.builds(
    lambda item, qty: {"sku": item[0], "category": item[1], "qty": qty, "unit_price": item[2]},
    st.sampled_from(MENU),
    st.integers(1, 4),
)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    baskets=st.lists(
        st.tuples(
            st.lists(line, min_size=1, max_size=8),
            st.booleans(),
            st.booleans(),
            st.randoms(use_true_random=False),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_random_baskets_under_all_programs(
    tmp_path_factory: pytest.TempPathFactory,
    baskets: list[tuple[list[dict[str, Any]], bool, bool, random.Random]],
) -> None:
    client = all_enabled(tmp_path_factory.mktemp("p"))
    card = client.post("/v1/customers", json={"at": "2025-01-01T09:00:00+00:00"}).json()
    code = card["card"]["code"]
    for n, (lines, own_cup, use_code, rnd) in enumerate(baskets):
        body = {
            "card": code,
            "at": f"2025-01-{2 + n:02d}T10:00:00+00:00",
            "lines": lines,
            "flags": ["own_cup"] if own_cup else [],
        }
        if use_code and sum(x["qty"] * x["unit_price"] for x in lines) >= 3000:
            body["codes"] = ["TAKE5"]
        q = client.post("/v1/baskets/quote", json=body)
        if q.status_code == 422:
            assert q.json()["error"]["code"] == "code_used_up"
            continue
        quoted = q.json()
        assert quoted["total"] >= 0
        assert all(0 <= x["discount"] <= x["qty"] * x["unit_price"] for x in quoted["lines"])
        promo = sum(
            d["amount"]
            for d in quoted["discounts"]
            if d["program"] not in {"coffee-card", "points"}
        )
        assert promo <= quoted["total_before"] * 5000 // 10000  # the cap
        shuffled = list(lines)
        rnd.shuffle(shuffled)
        again = client.post("/v1/baskets/quote", json={**body, "lines": shuffled}).json()
        for key in ("total", "total_discount", "earned", "tier"):
            assert again[key] == quoted[key], key
        done = client.post("/v1/baskets/commit", json={**body, "receipt_id": f"R{n}"}).json()
        for key in ("total_before", "total_discount", "total", "lines", "discounts", "earned"):
            assert done[key] == quoted[key], key
