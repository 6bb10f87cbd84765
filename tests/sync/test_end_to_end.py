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


def test_wallet_money_spent_twice_offline_is_flagged_as_an_overdraft(
    store: ServerStore, live_server: LiveServer, make_till: Callable[..., Till]
) -> None:
    """Two offline tills each let the customer spend the whole wallet (each within its
    offline limit): the server books both, the balance goes negative, and the second spend
    (a payout here) is listed in ``server overdrafts`` as a points overdraft is (wallet
    money was booked but never listed)."""
    import dataclasses

    from pos_loyalty.domain.basket import Basket, BasketLine, WalletPayment
    from pos_loyalty.domain.programs import CashbackProgram
    from pos_loyalty.service import SaleRequest

    programs = make_till("till-0").service.settings.programs
    wallet = CashbackProgram("cashback", "Cashback wallet", percent_bp=1000, payout=True)
    programs = dataclasses.replace(programs, programs=(*programs.programs, wallet))
    a, b = make_till("till-a", programs=programs), make_till("till-b", programs=programs)
    for till in (a, b):
        pair_till(store, till, live_server.url)
    enrolled = a.service.enrol(Profile(name="Eve"))
    card, customer = enrolled["card"]["code"], enrolled["customer_id"]
    tv = Basket((BasketLine("tv", 1, 20000, "electronics"),))
    a.service.commit(SaleRequest(tv, card, "A-0", None, {"r": "A-0"}))  # 20.00 cashback
    sync_round(a)
    sync_round(b)
    a.online = b.online = False
    paid = Basket(
        (BasketLine("pie", 1, 2000, "bakery"),), wallet=(WalletPayment("cashback", 2000),)
    )
    a.service.commit(SaleRequest(paid, card, "A-1", None, {"r": "A-1"}))
    b.service.wallet_payout(customer, "cashback", 2000)
    sync_round(a)
    sync_round(b)
    sync_round(a)
    assert store.balances("m1")[(customer, "cashback", "money")] == -2000
    listed = store.overdrafts("m1")
    assert [(o["terminal_id"], o["program"], o["balance_after"]) for o in listed] == [
        ("till-b", "cashback", -2000)
    ]
    assert nonzero(till_balances(a)) == nonzero(till_balances(b)) == nonzero(store.balances("m1"))
