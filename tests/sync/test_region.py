"""Region-only tills (``[sync] region_only``): a till holds only the customers whose home
store (the store of the till that enrolled them) is in its own store's region; the other
customers' events reach it as chain stubs, so ``ledger verify`` still checks every chain."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from pos_loyalty.domain.errors import DomainError
from pos_loyalty.ledger import schema
from pos_loyalty.ledger.verify import verify
from pos_loyalty.service import Profile
from sync.bootstrap import bootstrap
from sync.client import SyncClient
from sync.server.store import ServerStore

from .conftest import LiveServer, Till
from .helpers import nonzero, pair_till, sale, sync_round, till_balances


def region_round(till: Till) -> Any:
    creds = till.replica.credentials()
    assert creds is not None
    client = SyncClient(till.replica, creds, timeout=5.0, region_only=True)
    try:
        return client.round()
    finally:
        client.close()


def customers_of(till: Till) -> set[str]:
    with till.service.ledger.reader() as tx:
        return {r.customer_id for r in tx.conn.execute(select(schema.customers.c.customer_id))}


def server_balances_of(store: ServerStore, customers: set[str]) -> dict[tuple[str, str, str], int]:
    return {k: v for k, v in nonzero(store.balances("m1")).items() if k[0] in customers}


def setup_regions(
    store: ServerStore, live_server: LiveServer, make_till: Callable[..., Till]
) -> tuple[Till, Till, list[str], list[str]]:
    store.ensure_terminal("north-a", "m1", "n1", region="north")
    store.ensure_terminal("north-b", "m1", "n2", region="north")
    store.ensure_terminal("south-a", "m1", "s1", region="south")
    north, south = make_till("north-a"), make_till("south-a")
    pair_till(store, north, live_server.url, store_id="n1")
    pair_till(store, south, live_server.url, store_id="s1")
    north_cards = [north.service.enrol(Profile(name=f"n{i}"))["card"]["code"] for i in range(3)]
    south_cards = [south.service.enrol(Profile(name=f"s{i}"))["card"]["code"] for i in range(2)]
    for i, card in enumerate(north_cards):
        sale(north.service, card, f"N-{i}", price=1500 + 100 * i)
    for i, card in enumerate(south_cards):
        sale(south.service, card, f"S-{i}", price=2500 + 100 * i)
    sync_round(north)
    sync_round(south)
    # A north customer shopping in the south: their event follows them home.
    sale(south.service, north_cards[0], "S-visit", price=4200)
    sync_round(south)
    sync_round(north)
    return north, south, north_cards, south_cards


def north_ids(north: Till, cards: list[str]) -> set[str]:
    return {north.service.lookup(c)["customer"]["id"] for c in cards}


@pytest.mark.parametrize("start", ["bootstrap", "pull"])
def test_region_till_holds_only_its_regions_customers(
    store: ServerStore, live_server: LiveServer, make_till: Callable[..., Till], start: str
) -> None:
    north, south, north_cards, south_cards = setup_regions(store, live_server, make_till)
    home = north_ids(north, north_cards)
    b = make_till("north-b")
    creds = pair_till(store, b, live_server.url, store_id="n2")
    if start == "bootstrap":
        result = bootstrap(b.replica, creds, region_only=True)
        assert result.customers == len(home)
    else:
        region_round(b)
    assert customers_of(b) == home
    assert nonzero(till_balances(b)) == server_balances_of(store, home)
    report = verify(b.service.ledger)
    assert report.ok, report.problems
    # What a cashier sees for a customer of another region: an unknown card.
    for card in south_cards:
        with pytest.raises(DomainError) as refused:
            b.service.lookup(card)
        assert refused.value.code == "unknown_card"

    # Later: events of south customers arrive as stubs, north ones as events.
    sale(south.service, south_cards[0], "S-later", price=3000)
    south.service.enrol(Profile(name="s-new"))
    sale(north.service, north_cards[1], "N-later", price=3000)
    sync_round(south)
    sync_round(north)
    region_round(b)
    assert customers_of(b) == home
    assert nonzero(till_balances(b)) == server_balances_of(store, home)
    with b.service.ledger.reader() as tx:
        stubs = list(tx.conn.execute(select(schema.chain_stubs)))
        held = {r.customer_id for r in tx.conn.execute(select(schema.events.c.customer_id))}
    assert any(s.terminal_id == "south-a" for s in stubs)
    assert held - {None} <= home
    report = verify(b.service.ledger)
    assert report.ok, report.problems

    # The region till sells to its customers; full tills and the server agree with it.
    b.online = True
    sale(b.service, north_cards[2], "B-1", price=1800)
    region_round(b)
    sync_round(north)
    sync_round(south)
    assert nonzero(till_balances(north)) == nonzero(store.balances("m1"))
    assert nonzero(till_balances(south)) == nonzero(store.balances("m1"))
    assert nonzero(till_balances(b)) == server_balances_of(store, home)
    for till in (north, south, b):
        assert verify(till.service.ledger).ok, verify(till.service.ledger).problems


def test_a_region_bootstrapped_till_keeps_pulling_its_region(
    store: ServerStore, live_server: LiveServer, make_till: Callable[..., Till]
) -> None:
    """The scope is taken from the baseline: a plain round (region_only not passed) still
    asks for the region, so it never applies events of customers it does not hold."""
    north, south, north_cards, south_cards = setup_regions(store, live_server, make_till)
    home = north_ids(north, north_cards)
    b = make_till("north-b")
    creds = pair_till(store, b, live_server.url, store_id="n2")
    bootstrap(b.replica, creds, region_only=True)
    sale(south.service, south_cards[1], "S-more", price=999)
    sync_round(south)
    sync_round(b)  # helper client: region_only=False
    assert customers_of(b) == home
    assert nonzero(till_balances(b)) == server_balances_of(store, home)
    assert verify(b.service.ledger).ok


def test_regions_partition_the_customers(
    store: ServerStore, live_server: LiveServer, make_till: Callable[..., Till]
) -> None:
    """A north and a south region till together hold every customer exactly once, each with
    the server's balances."""
    north, south, _, _ = setup_regions(store, live_server, make_till)
    store.ensure_terminal("south-b", "m1", "s2", region="south")
    tills = {}
    for name, store_id in (("north-b", "n2"), ("south-b", "s2")):
        till = make_till(name)
        creds = pair_till(store, till, live_server.url, store_id=store_id)
        bootstrap(till.replica, creds, region_only=True)
        tills[name] = till
    nb, sb = customers_of(tills["north-b"]), customers_of(tills["south-b"])
    assert not nb & sb and nb | sb == customers_of(north) == customers_of(south)
    merged = {**till_balances(tills["north-b"]), **till_balances(tills["south-b"])}
    assert nonzero(merged) == nonzero(store.balances("m1"))
