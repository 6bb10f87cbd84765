"""Push batches and the server's body limit: a till caps its batches by bytes, halves them
when the server still finds one too large (413), and names an event no batch can carry,
instead of failing with the same 413 at every round for ever."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from pos_loyalty.domain.basket import Basket, BasketLine
from pos_loyalty.service import Profile, SaleRequest
from sync.client import DEFAULT_BATCH_BYTES, SyncClient, SyncFailed
from sync.server.app import create_server_app
from sync.server.store import ServerStore

from .conftest import LiveServer, Till
from .helpers import nonzero, pair_till, sync_round, till_balances


def server_with_limit(store: ServerStore, max_body: int) -> LiveServer:
    return LiveServer(create_server_app(store, max_body_bytes=max_body, rate=10_000, burst=10_000))


@pytest.fixture
def limited(store: ServerStore) -> Iterator[Callable[[int], LiveServer]]:
    servers: list[LiveServer] = []

    def start(max_body: int) -> LiveServer:
        servers.append(server_with_limit(store, max_body))
        return servers[-1]

    yield start
    for srv in servers:
        srv.stop()


def big_sales(till: Till, n: int, lines: int = 150) -> None:
    """``n`` sales of a ``lines``-line basket (~120 bytes a line on the wire)."""
    card = till.service.enrol(Profile(name="Big shop"), None)["card"]["code"]
    basket = Basket(
        tuple(BasketLine(f"sku-{i:04d}-some-product", 1, 100 + i, "grocery") for i in range(lines))
    )
    for k in range(n):
        till.service.commit(SaleRequest(basket, card, f"R-{k}", None, {"n": k}))


class Recorder:
    """A till's sync client whose push bodies (size, answer) are recorded as they go."""

    def __init__(self, till: Till, batch_bytes: int = DEFAULT_BATCH_BYTES) -> None:
        self.pushes: list[tuple[int, int]] = []  # (body bytes, status)
        creds = till.replica.credentials()
        assert creds is not None
        self.http = httpx.Client(timeout=30, event_hooks={"response": [self._record]})
        self.client = SyncClient(till.replica, creds, http=self.http, batch_bytes=batch_bytes)

    def _record(self, response: httpx.Response) -> None:
        if response.request.url.path == "/v1/sync/push":
            self.pushes.append((len(response.request.content), response.status_code))

    def round(self) -> list[tuple[int, int]]:
        self.pushes.clear()
        self.client.round()
        return list(self.pushes)

    def close(self) -> None:
        self.http.close()


def test_batches_stay_below_the_byte_cap(
    store: ServerStore, limited: Callable[[int], LiveServer], make_till: Callable[..., Till]
) -> None:
    """Big baskets: 1,000 events would be ~18 MB. A server whose limit is the till's cap
    never has to refuse a batch (a cap of 1 MiB here, the default's quarter, to keep the
    ledger small)."""
    assert DEFAULT_BATCH_BYTES <= 8 * 1024 * 1024 // 2  # half the server's default limit
    cap = 1024 * 1024
    srv = limited(cap)
    till = make_till("till-1")
    pair_till(store, till, srv.url)
    big_sales(till, 130)  # ~2.4 MB
    sync = Recorder(till, batch_bytes=cap)
    pushes = sync.round()
    sync.close()
    assert len(pushes) >= 3 and max(size for size, _ in pushes) <= cap
    # (409: a pipelined batch that took the server's lock first, sent again: see
    # test_pipelined_push.py)
    assert 413 not in {status for _, status in pushes}
    assert till.replica.waiting() == 0
    assert nonzero(store.balances("m1")) == nonzero(till_balances(till))


def test_a_batch_over_the_servers_limit_is_halved_until_it_fits(
    store: ServerStore, limited: Callable[[int], LiveServer], make_till: Callable[..., Till]
) -> None:
    srv = limited(150 * 1024)  # a server (or a proxy in front of it) taking far less
    till = make_till("till-1")
    pair_till(store, till, srv.url)
    big_sales(till, 60)  # ~1.1 MB: the first batch is the full cap
    sync = Recorder(till, batch_bytes=1024 * 1024)
    try:
        pushes = sync.round()
        refused = [size for size, status in pushes if status == 413]
        assert pushes[0] == (refused[0], 413) and pushes[-1][1] == 200
        # Halved each time (1 MiB, 512 KiB, 256 KiB: 3 steps; with the batch pipelined
        # behind each one refused too), not retried at one size for ever.
        assert len(refused) <= 6 and sync.client.batch_bytes <= 150 * 1024
        assert max(size for size, status in pushes if status == 200) <= 150 * 1024
        assert till.replica.waiting() == 0
        assert nonzero(store.balances("m1")) == nonzero(till_balances(till))
        # The client keeps the size that fitted: the next rounds are not refused again.
        big_sales(till, 20)
        pushes = sync.round()
        assert pushes and 413 not in {status for _, status in pushes}
        assert max(size for size, _ in pushes) <= 150 * 1024
    finally:
        sync.close()
    assert till.replica.waiting() == 0
    assert nonzero(store.balances("m1")) == nonzero(till_balances(till))


def test_an_event_larger_than_the_limit_fails_by_name_and_does_not_loop(
    store: ServerStore, limited: Callable[[int], LiveServer], make_till: Callable[..., Till]
) -> None:
    srv = limited(8 * 1024)
    till = make_till("till-1")
    pair_till(store, till, srv.url)
    big_sales(till, 1)  # one ~18 KB sale after the small enrolment events
    (sale,) = [e for e in till.replica.unsynced(10) if e.kind == "sale.committed"]
    with pytest.raises(SyncFailed) as exc:
        sync_round(till, srv.url)
    assert exc.value.code == "event_too_large" and exc.value.reachable
    message = str(exc.value)
    assert f"event {sale.id} (seq {sale.seq}, sale.committed)" in message
    assert "limited to 8192 bytes" in message and "--max-body" in message
    assert till.replica.waiting() == 1  # the enrolment went through; the sale waits
