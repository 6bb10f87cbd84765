"""Security: each refused with a clear error, nothing written."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from pos_loyalty.ledger.store import Ledger
from sync.client import _wire
from sync.server.app import RateLimiter, create_server_app
from sync.server.store import ServerStore

from .test_store_contract import append, credit


@pytest.fixture
def http(store: ServerStore) -> Iterator[TestClient]:
    app = create_server_app(store, max_body_bytes=64 * 1024, rate=1000, burst=1000)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def credential(
    http: TestClient, store: ServerStore, terminal: str, merchant: str = "m1"
) -> dict[str, str]:
    token = store.create_pairing_token(terminal, merchant, f"{merchant}-s")
    r = http.post("/v1/sync/pair", json={"token": token})
    assert r.status_code == 200, r.text
    assert http.post("/v1/sync/pair", json={"token": token}).json()["error"]["code"] == "token_used"
    return {"authorization": "Bearer " + r.json()["credential"]}


class Batch(TypedDict):
    """A push request body as JSON."""

    terminal_id: str
    events: list[dict[str, Any]]


def batch(tmp_path: Path, terminal: str, n: int = 2) -> Batch:
    ledger = Ledger(tmp_path / f"{terminal}-{n}.sqlite", terminal)
    events = append(ledger, [credit(terminal, "c1", 5) for _ in range(n)])
    ledger.close()
    return {"terminal_id": terminal, "events": [_wire(e) for e in events]}


def nothing_written(store: ServerStore) -> None:
    assert store.count("events") == 0 and store.count("chain") == 0


def refused(response: Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_till_presenting_another_tills_id(
    http: TestClient, store: ServerStore, tmp_path: Path
) -> None:
    auth_a = credential(http, store, "t1")
    credential(http, store, "t2")
    refused(
        http.post("/v1/sync/push", json=batch(tmp_path, "t2"), headers=auth_a),
        403,
        "wrong_terminal",
    )
    body = batch(tmp_path, "t2")
    body["terminal_id"] = "t1"
    refused(http.post("/v1/sync/push", json=body, headers=auth_a), 403, "wrong_terminal")
    nothing_written(store)


def test_revoked_and_unknown_credentials(
    http: TestClient, store: ServerStore, tmp_path: Path
) -> None:
    auth = credential(http, store, "t1")
    store.revoke("t1")
    refused(
        http.post("/v1/sync/push", json=batch(tmp_path, "t1"), headers=auth),
        403,
        "terminal_revoked",
    )
    refused(http.get("/v1/sync/pull", headers=auth), 403, "terminal_revoked")
    refused(
        http.get("/v1/sync/pull", headers={"authorization": "Bearer nope"}),
        401,
        "invalid_credentials",
    )
    refused(http.get("/v1/sync/pull"), 401, "credentials_required")
    nothing_written(store)


def test_another_merchants_cursor(http: TestClient, store: ServerStore, tmp_path: Path) -> None:
    a = credential(http, store, "t1", "m1")
    b = credential(http, store, "t9", "m2")
    assert http.post("/v1/sync/push", json=batch(tmp_path, "t1"), headers=a).status_code == 200
    cursor = http.get("/v1/sync/pull", headers=credential(http, store, "t2", "m1")).json()["cursor"]
    refused(http.get("/v1/sync/pull", params={"after": cursor}, headers=b), 403, "foreign_cursor")
    page = http.get("/v1/sync/pull", headers=b).json()
    assert page["events"] == []  # m2 never sees m1's events
    refused(http.get("/v1/sync/pull", params={"after": "garbage"}, headers=b), 400, "bad_cursor")


def test_oversized_and_malformed_batches(
    http: TestClient, store: ServerStore, tmp_path: Path
) -> None:
    auth = credential(http, store, "t1")
    big = batch(tmp_path, "t1", 200)
    refused(http.post("/v1/sync/push", json=big, headers=auth), 413, "body_too_large")
    raw = {**auth, "content-type": "application/json"}
    refused(http.post("/v1/sync/push", content=b"{not json", headers=raw), 400, "malformed_request")
    body = batch(tmp_path, "t1")
    body["events"][0]["payload"] = json.dumps(
        {"p": [{"program": "points", "unit": "points", "delta": 999}], "d": {}}
    )
    refused(http.post("/v1/sync/push", json=body, headers=auth), 422, "bad_hash")
    body = batch(tmp_path, "t1")
    # A lone surrogate (valid JSON escape, not encodable as UTF-8): refused, not a 500.
    body["events"][0]["payload"] = '{"d":{"reason":"\\ud800"},"p":[]}'
    refused(http.post("/v1/sync/push", json=body, headers=auth), 422, "bad_hash")
    body = batch(tmp_path, "t1")
    body["events"].reverse()
    refused(http.post("/v1/sync/push", json=body, headers=auth), 422, "broken_batch")
    body = batch(tmp_path, "t1")
    body["events"][0]["seq"] = "one"
    refused(http.post("/v1/sync/push", json=body, headers=auth), 422, "invalid_request")
    refused(
        http.post("/v1/sync/push", json={"terminal_id": "t1", "events": []}, headers=auth),
        422,
        "invalid_request",
    )
    nothing_written(store)


def test_rate_limit(store: ServerStore) -> None:
    app = create_server_app(store, rate=0.001, burst=2)
    with TestClient(app) as c:
        headers = {"authorization": "Bearer whatever-credential"}
        codes = [c.get("/v1/sync/pull", headers=headers).status_code for _ in range(3)]
    assert codes == [401, 401, 429]


def test_made_up_credentials_are_limited_by_address_not_by_credential(store: ServerStore) -> None:
    """Buckets used to be keyed by the credential sent, before it was checked: a client
    making one up per request was never limited and each one stayed in memory for good."""
    app = create_server_app(store, rate=1.0, burst=2)
    with TestClient(app) as c:
        codes = [
            c.get(
                "/v1/sync/pull", headers={"authorization": f"Bearer {secrets.token_hex(16)}"}
            ).status_code
            for _ in range(300)
        ]
        # a burst of 2, then one a second
        assert codes[:3] == [401, 401, 429] and codes.count(401) < 20
        # A till with good credentials from the same address (behind one proxy) is served.
        token = store.create_pairing_token("t1", "m1", "s1")
        auth = {
            "authorization": "Bearer "
            + c.post("/v1/sync/pair", json={"token": token}).json()["credential"]
        }
        assert c.get("/v1/sync/pull", headers=auth).status_code == 200
        assert c.get("/v1/sync/pull", headers=auth).status_code == 200
        assert c.get("/v1/sync/pull", headers=auth).status_code == 429  # its own bucket


def test_rate_limiter_memory_is_bounded() -> None:
    limiter = RateLimiter(rate=1000.0, burst=5, max_keys=100)
    for i in range(1000):
        assert limiter.allow(f"k{i}")
    assert len(limiter) == 100  # the least recently used went first
    assert limiter.allow("k999") and limiter.allow("k0")
    time.sleep(1.1)  # every bucket refilled: the same as none
    limiter.allow("again")
    assert len(limiter) == 1
