"""Offline redemption limits (DESIGN invariant 8): bounded per card and per till per day."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

import pytest

from pos_loyalty.bootstrap import open_service
from pos_loyalty.config import load_settings
from pos_loyalty.domain.basket import Basket, BasketLine, Redemption
from pos_loyalty.domain.errors import DomainError
from pos_loyalty.service import Profile, SaleRequest, Service

DAY = "2025-03-01T{}:00+00:00"


def make_service(tmp_path: Path, *, sync: bool, card: int, till: int) -> Service:
    settings = load_settings(None, data_dir=tmp_path)
    settings = dataclasses.replace(
        settings,
        sync=dataclasses.replace(settings.sync, enabled=sync, server_url="http://127.0.0.1:9"),
        offline=dataclasses.replace(
            settings.offline, points_per_card_per_day=card, points_per_terminal_per_day=till
        ),
    )
    return open_service(settings)


def rich_customer(service: Service) -> str:
    enrolled = service.enrol(Profile(name="Rich"), datetime.fromisoformat("2025-02-01T10:00+00:00"))
    service.adjust(
        enrolled["customer_id"],
        "points",
        10_000,
        "goodwill",
        datetime.fromisoformat(DAY.format("08")),
    )
    return str(enrolled["card"]["code"])


def redeem(service: Service, card: str, receipt: str, points: int, at: str) -> dict[str, object]:
    basket = Basket(
        (BasketLine("cake", 1, 5000, "bakery"),), redeem=(Redemption("points", points),)
    )
    raw = {"receipt_id": receipt, "points": points, "at": at}
    return service.commit(SaleRequest(basket, card, receipt, datetime.fromisoformat(at), raw))


def test_offline_till_limits_points_per_card_per_day(tmp_path: Path) -> None:
    service = make_service(tmp_path, sync=True, card=300, till=10_000)
    card = rich_customer(service)
    redeem(service, card, "R1", 200, DAY.format("09"))
    with pytest.raises(DomainError) as refused:
        redeem(service, card, "R2", 101, DAY.format("10"))
    assert refused.value.code == "offline_limit_exceeded"
    assert "100" in refused.value.message
    redeem(service, card, "R3", 100, DAY.format("11"))  # exactly the rest of the allowance
    redeem(service, card, "R4", 300, "2025-03-02T09:00:00+00:00")  # a new day


def test_offline_till_limits_all_cards_together(tmp_path: Path) -> None:
    service = make_service(tmp_path, sync=True, card=1000, till=500)
    first, second = rich_customer(service), rich_customer(service)
    redeem(service, first, "R1", 400, DAY.format("09"))
    with pytest.raises(DomainError, match="at most 100 more"):
        redeem(service, second, "R2", 200, DAY.format("10"))


def test_limits_do_not_apply_online_or_standalone(tmp_path: Path) -> None:
    standalone = make_service(tmp_path / "a", sync=False, card=10, till=10)
    redeem(standalone, rich_customer(standalone), "R1", 500, DAY.format("09"))
    online = make_service(tmp_path / "b", sync=True, card=10, till=10)
    online.online = lambda: True
    redeem(online, rich_customer(online), "R1", 500, DAY.format("09"))


def test_refused_redemption_writes_nothing(tmp_path: Path) -> None:
    service = make_service(tmp_path, sync=True, card=50, till=50)
    card = rich_customer(service)
    before = service.health()["head"]
    with pytest.raises(DomainError):
        redeem(service, card, "R1", 60, DAY.format("09"))
    assert service.health()["head"] == before
