"""Two and three tills through a real HTTP server (uvicorn on loopback)."""

from __future__ import annotations

from collections.abc import Callable

from pos_loyalty.ledger.verify import verify
from pos_loyalty.service import Profile, points_of
from sync.server.store import ServerStore

from .conftest import LiveServer, Till
from .helpers import event_ids, nonzero, pair_till, sale, sync_round, till_balances


def test_earn_at_one_till_redeem_at_another(
    store: ServerStore, live_server: LiveServer, make_till: Callable[..., Till]
) -> None:
    a, b = make_till("till-a"), make_till("till-b")
    for till in (a, b):
        pair_till(store, till, live_server.url)
    enrolled = a.service.enrol(Profile(name="Eve"))
    card = enrolled["card"]["code"]
    sale(a.service, card, "A-1", price=5000)  # earns points
    earned = points_of(a.service.lookup(card), "points")
    assert earned > 0

    first = sync_round(a)
    assert first.accepted == first.pushed > 0
    sync_round(b)
    assert points_of(b.service.lookup(card), "points") == earned

    b.online = True
    sale(b.service, card, "B-1", price=100, redeem=earned)
    sync_round(b)
    sync_round(a)
    for till in (a, b):
        assert verify(till.service.ledger).ok, verify(till.service.ledger).problems
    assert nonzero(till_balances(a)) == nonzero(till_balances(b)) == nonzero(store.balances("m1"))
    assert event_ids(a) == event_ids(b) == set(store.event_ids("m1"))
    # A second round changes nothing anywhere.
    again = sync_round(a)
    assert again.pushed == 0 and again.pulled.applied == 0
