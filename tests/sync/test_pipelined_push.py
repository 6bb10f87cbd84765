"""The till keeps two push batches on the wire (``sync.client.PIPELINE``): when the later
one reaches the server first, the server refuses it (``409 sequence_gap``, nothing
written) and the till sends it again after the earlier one, without rewinding what the
server acknowledged; a real gap (the server restored from a backup) still rewinds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import pytest

from sync.client import SyncClient, SyncFailed
from sync.server.store import ServerStore

from .conftest import LiveServer, Till
from .helpers import append_adjustments, event_ids, pair_till


class PushTransport(httpx.BaseTransport):
    """A real HTTP transport that numbers the push requests (1, 2, ...) for ``push``."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.pushes = 0
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/v1/sync/push":
            return self.inner.handle_request(request)
        with self.lock:
            self.pushes += 1
            number = self.pushes
        return self.push(number, request)

    def push(self, number: int, request: httpx.Request) -> httpx.Response:
        raise NotImplementedError

    def close(self) -> None:
        self.inner.close()


class HoldFirstPush(PushTransport):
    """Sends the first push request only after the second one has been answered."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []
        self.second_answered = threading.Event()

    def push(self, number: int, request: httpx.Request) -> httpx.Response:
        if number == 1:
            assert self.second_answered.wait(10), "the second batch was not sent meanwhile"
        response = self.inner.handle_request(request)
        response.read()
        with self.lock:
            self.statuses.append(response.status_code)
        if number == 2:
            self.second_answered.set()
        return response


def credits(till: Till, n: int) -> None:
    append_adjustments(till, [(f"c{i % 7}", 1) for i in range(n)], "test")


def till_through(
    transport: httpx.BaseTransport,
    store: ServerStore,
    live_server: LiveServer,
    make_till: Callable[..., Till],
) -> tuple[Till, SyncClient]:
    """A paired till with 25 events waiting, its client pushing batches of 10 through
    ``transport``."""
    till = make_till("till-a")
    creds = pair_till(store, till, live_server.url)
    credits(till, 25)
    return till, SyncClient(till.replica, creds, http=httpx.Client(transport=transport), batch=10)


def test_a_batch_overtaking_the_one_before_is_sent_again_after_it(
    store: ServerStore, live_server: LiveServer, make_till: Callable[..., Till]
) -> None:
    transport = HoldFirstPush()
    till, client = till_through(transport, store, live_server, make_till)
    result = client.push()
    client.close()
    # seq 11-20 reached the server before 1-10: refused, then sent again after them (and
    # 21-25, sent while 11-20 was still out, refused once too); each batch stored once.
    assert transport.statuses[:2] == [409, 200]
    assert transport.statuses.count(200) == 3
    assert (result.pushed, result.accepted, result.duplicates) == (25, 25, 0)  # no rewind
    assert till.replica.state().acked_seq == 25
    assert event_ids(till) == set(store.event_ids("m1"))
    assert sum(store.balances("m1").values()) == 25


def test_a_server_restored_from_a_backup_still_gets_the_chain_again(
    store: ServerStore, live_server: LiveServer, make_till: Callable[..., Till]
) -> None:
    """The first batch on the wire meets a gap: the server holds less than the till was
    told (restored). The till rewinds to the server's head and sends the rest again."""
    till = make_till("till-a")
    creds = pair_till(store, till, live_server.url)
    credits(till, 5)
    client = SyncClient(till.replica, creds, batch=10)
    assert client.push().accepted == 5
    # As if the server had lost everything after seq 2 (the till says 5 were acknowledged).
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM events WHERE seq > 2")
        conn.exec_driver_sql(
            "UPDATE terminals SET head_seq = 2, head_hash = (SELECT hash FROM events WHERE seq = 2)"
        )
    credits(till, 20)
    started = time.monotonic()
    result = client.push()
    client.close()
    assert time.monotonic() - started < 10
    assert (result.accepted, result.duplicates) == (23, 0)
    assert till.replica.state().acked_seq == 25
    assert event_ids(till) == set(store.event_ids("m1"))


class FailFirstHoldSecond(PushTransport):
    """The first push is refused (503) once the second is on the wire; the second hangs."""

    def __init__(self) -> None:
        super().__init__()
        self.second_sent = threading.Event()
        self.release = threading.Event()

    def push(self, number: int, request: httpx.Request) -> httpx.Response:
        if number == 1:
            assert self.second_sent.wait(10)
            body = b'{"error": {"code": "unavailable", "message": "try later"}}'
            return httpx.Response(503, content=body, request=request)
        self.second_sent.set()
        self.release.wait(20)  # a server that takes its time
        return self.inner.handle_request(request)


def test_a_failed_round_does_not_wait_for_the_batch_still_on_the_wire(
    store: ServerStore, live_server: LiveServer, make_till: Callable[..., Till]
) -> None:
    transport = FailFirstHoldSecond()
    till, client = till_through(transport, store, live_server, make_till)
    started = time.monotonic()
    with pytest.raises(SyncFailed):
        client.push()
    assert time.monotonic() - started < 5  # the 20 s request is not waited for
    assert till.replica.state().acked_seq == 0  # nothing recorded out of order
    transport.release.set()
    # The next round sends everything; whatever reached the server meanwhile is a duplicate.
    again = SyncClient(till.replica, client.credentials, batch=10)
    result = again.push()
    again.close()
    assert result.accepted + result.duplicates == 25 and result.conflicts == 0
    assert event_ids(till) == set(store.event_ids("m1"))
