"""Bad input to the plugin API: always a 4xx ``{"error": {"code", "message"}}``, never a
5xx, and nothing written (the ledger head does not move)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pos_loyalty.domain.cardcode import make_card_code

SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
JSON = {"content-type": "application/json"}
AT = "2025-01-02T09:00:00+00:00"


def assert_refused(r: Any) -> Any:
    """A 4xx whose body is exactly the documented error shape."""
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"code", "message"}, err
    assert isinstance(err["code"], str) and SNAKE.match(err["code"]), err
    assert isinstance(err["message"], str) and err["message"].strip(), err
    assert "Traceback" not in r.text
    return err


def head(client: TestClient) -> Any:
    return client.get("/v1/health").json()["head"]


@pytest.fixture
def card(client: TestClient) -> str:
    r = client.post("/v1/customers", json={"at": "2025-01-01T09:00:00+00:00"})
    assert r.status_code == 201
    code: str = r.json()["card"]["code"]
    # A sale to refund in the refund cases.
    ok = client.post("/v1/baskets/commit", json=basket(code, receipt_id="SOLD"))
    assert ok.status_code == 200
    return code


def basket(code: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "receipt_id": "R-BAD",
        "card": code,
        "at": AT,
        "lines": [
            {"sku": "espresso", "category": "coffee", "qty": 1, "unit_price": 320},
            {"sku": "cake", "category": "bakery", "qty": 2, "unit_price": 450},
        ],
    }
    body.update(extra)
    return body


def with_line(code: str, **field: Any) -> dict[str, Any]:
    body = basket(code)
    body["lines"][1].update(field)
    return body


def future() -> str:
    return (datetime.now(UTC) + timedelta(days=1)).isoformat()


BAD_VALUES = [1.5, "3", True, None, -1, [1], {"n": 1}, 10**30, 2.0]

# (name, body maker taking the card code, expected status or None for any 4xx, code or None)
CASES: list[tuple[str, Any, int | None, str | None]] = []
for _field in ("unit_price", "qty"):
    for _value in BAD_VALUES:
        CASES.append(
            (
                f"{_field}={_value!r}",
                lambda c, f=_field, v=_value: with_line(c, **{f: v}),
                422,
                "invalid_request",
            )
        )
CASES += [
    ("qty=0", lambda c: with_line(c, qty=0), 422, "invalid_request"),
    ("unit_price=-320", lambda c: with_line(c, unit_price=-320), 422, "invalid_request"),
    ("sku-missing", lambda c: {**basket(c), "lines": [{"qty": 1, "unit_price": 1}]}, 422, None),
    ("sku-empty", lambda c: with_line(c, sku=""), 422, None),
    ("sku-number", lambda c: with_line(c, sku=12), 422, None),
    ("no-lines", lambda c: {**basket(c), "lines": []}, 422, None),
    ("lines-not-a-list", lambda c: {**basket(c), "lines": {"sku": "a"}}, 422, None),
    ("line-not-object", lambda c: {**basket(c), "lines": [1]}, 422, None),
    ("too-many-lines", lambda c: {**basket(c), "lines": basket(c)["lines"][:1] * 501}, None, None),
    (
        "unknown-redeem-program",
        lambda c: basket(c, redeem=[{"program": "nope", "points": 10}]),
        422,
        "unknown_program",
    ),
    (
        "redeem-a-stamp-card",
        lambda c: basket(c, redeem=[{"program": "coffee-card", "points": 1}]),
        422,
        None,
    ),
    (
        "redeem-twice",
        lambda c: basket(
            c, redeem=[{"program": "points", "points": 1}, {"program": "points", "points": 1}]
        ),
        422,
        None,
    ),
    ("redeem-zero", lambda c: basket(c, redeem=[{"program": "points", "points": 0}]), 422, None),
    (
        "redeem-negative",
        lambda c: basket(c, redeem=[{"program": "points", "points": -5}]),
        422,
        None,
    ),
    ("redeem-float", lambda c: basket(c, redeem=[{"program": "points", "points": 1.5}]), 422, None),
    (
        "redeem-string",
        lambda c: basket(c, redeem=[{"program": "points", "points": "5"}]),
        422,
        None,
    ),
    (
        "redeem-too-much",
        lambda c: basket(c, redeem=[{"program": "points", "points": 10**6}]),
        422,
        "insufficient_points",
    ),
    (
        "redeem-anonymous",
        lambda c: {**basket(c, redeem=[{"program": "points", "points": 1}]), "card": None},
        422,
        None,
    ),
    ("unknown-code", lambda c: basket(c, codes=["SPRING10"]), 422, None),
    ("unknown-card", lambda c: basket(make_card_code("PL", 4242)), 404, "unknown_card"),
    ("garbage-card", lambda c: basket("not a card"), 404, "unknown_card"),
    ("empty-card", lambda c: basket(""), 422, None),
    ("payment-card", lambda c: basket("4111111111111111"), 422, "payment_card_rejected"),
    ("at-in-future", lambda c: basket(c, at=future()), 422, "at_in_future"),
    ("at-without-offset", lambda c: basket(c, at="2025-01-02T09:00:00"), 422, "invalid_at"),
    ("at-garbage", lambda c: basket(c, at="yesterday"), 422, "invalid_at"),
    ("at-number", lambda c: basket(c, at=1735808400), 422, None),
    ("unknown-field", lambda c: basket(c, tip=100), 422, "invalid_request"),
    ("unknown-line-field", lambda c: with_line(c, vat=20), 422, "invalid_request"),
    ("receipt-id-empty", lambda c: basket(c, receipt_id=""), 422, None),
    ("receipt-id-number", lambda c: basket(c, receipt_id=1001), 422, None),
]


@pytest.mark.parametrize("endpoint", ["/v1/baskets/quote", "/v1/baskets/commit"])
@pytest.mark.parametrize(
    ("make", "status", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_baskets(
    client: TestClient, card: str, endpoint: str, make: Any, status: int | None, code: str | None
) -> None:
    body = make(card)
    if endpoint.endswith("quote") and code == "at_in_future":
        pytest.skip("a quote is a read: it may look at a future moment (only writes refuse)")
    before = head(client)
    r = client.post(endpoint, json=body)
    err = assert_refused(r)
    if code is not None:
        assert err["code"] == code
    if status is not None:
        assert r.status_code == status
    assert head(client) == before
    # The receipt id is not used up: the valid basket commits afterwards.
    good = client.post("/v1/baskets/commit", json=basket(card))
    assert good.status_code == 200, good.text


RAW_BODIES = [
    ("malformed-json", b'{"lines": [', "malformed_json"),
    ("trailing-garbage", b'{"lines": []} x', "malformed_json"),
    ("single-quotes", b"{'lines': []}", "malformed_json"),
    ("json-array", b'[{"sku": "a", "qty": 1, "unit_price": 1}]', "malformed_json"),
    ("json-string", b'"hello"', "malformed_json"),
    ("json-number", b"42", "malformed_json"),
    ("json-null", b"null", "malformed_json"),
    ("empty-body", b"", "malformed_json"),
    ("whitespace-body", b"   \n", "malformed_json"),
    ("nan", b'{"lines": [{"sku": "a", "qty": 1, "unit_price": NaN}]}', None),
    ("infinity", b'{"lines": [{"sku": "a", "qty": Infinity, "unit_price": 1}]}', None),
    ("lone-surrogate", b'{"lines": [{"sku": "\\ud800", "qty": 1, "unit_price": 1}]}', None),
    ("huge-int", b'{"lines": [{"sku": "a", "qty": 1, "unit_price": 1' + b"0" * 4000 + b"}]}", None),
    ("deep-nesting", b'{"lines": ' + b"[" * 5000 + b"]" * 5000 + b"}", None),
    ("invalid-utf8", b'{"lines": [{"sku": "\xff\xfe", "qty": 1, "unit_price": 1}]}', None),
]


@pytest.mark.parametrize(
    "endpoint", ["/v1/baskets/quote", "/v1/baskets/commit", "/v1/refunds", "/v1/customers"]
)
@pytest.mark.parametrize(
    ("raw", "code"), [r[1:] for r in RAW_BODIES], ids=[r[0] for r in RAW_BODIES]
)
def test_unparseable_bodies(
    client: TestClient, card: str, endpoint: str, raw: bytes, code: str | None
) -> None:
    before = head(client)
    err = assert_refused(client.post(endpoint, content=raw, headers=JSON))
    if code is not None:
        assert err["code"] == code
    assert head(client) == before


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 5000,
        b'{"lines": [{"sku": "a", "qty": 1, "unit_price": 1' + b"0" * 5000 + b"}]}",
        b'{"lines": "\xff"}',
    ],
    ids=["deep-nesting", "huge-int", "invalid-utf8"],
)
def test_unparseable_bodies_are_malformed_json(client: TestClient, raw: bytes) -> None:
    r = client.post("/v1/baskets/quote", content=raw, headers=JSON)
    assert r.json()["error"]["code"] == "malformed_json"


@pytest.mark.parametrize(
    "headers",
    [{"content-type": "text/plain"}, {}, {"content-type": "application/x-www-form-urlencoded"}],
    ids=["text-plain", "none", "form"],
)
def test_non_json_content_types(client: TestClient, card: str, headers: dict[str, str]) -> None:
    before = head(client)
    raw = json.dumps(basket(card)).encode()
    assert_refused(client.post("/v1/baskets/commit", content=raw, headers=headers))
    assert head(client) == before


@pytest.mark.parametrize(
    "endpoint", ["/v1/baskets/quote", "/v1/baskets/commit", "/v1/refunds", "/v1/customers"]
)
def test_oversized_bodies(client: TestClient, card: str, endpoint: str) -> None:
    limit = 65536
    before = head(client)
    body = basket(card, receipt_id="BIG")
    body["lines"] = body["lines"][:1] * 500
    body["flags"] = ["x" * 60] * 20
    body["codes"] = ["y" * 60] * 20
    padded = json.dumps(body) + " " * limit  # valid JSON, too many bytes
    # Announced with Content-Length.
    r = client.post(endpoint, content=padded.encode(), headers=JSON)
    err = assert_refused(r)
    assert r.status_code == 413 and err["code"] == "body_too_large"

    # Streamed (chunked, no Content-Length).
    def chunks() -> Iterator[bytes]:
        data = padded.encode()
        for i in range(0, len(data), 4096):
            yield data[i : i + 4096]

    r = client.post(endpoint, content=chunks(), headers=JSON)
    assert "content-length" not in {k.lower() for k in r.request.headers}
    err = assert_refused(r)
    assert r.status_code == 413 and err["code"] == "body_too_large"

    # A lying Content-Length.
    r = client.post(endpoint, content=b"{}", headers={**JSON, "content-length": "abc"})
    assert 400 <= r.status_code < 500
    assert head(client) == before


def test_a_body_just_under_the_limit_is_accepted(client: TestClient, card: str) -> None:
    body = json.dumps(basket(card, receipt_id="FITS"))
    padded = body + " " * (65536 - len(body))
    r = client.post("/v1/baskets/commit", content=padded.encode(), headers=JSON)
    assert r.status_code == 200, r.text


REFUND_CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("qty-zero", {"lines": [{"sku": "cake", "qty": 0}]}, "invalid_request"),
    ("qty-negative", {"lines": [{"sku": "cake", "qty": -1}]}, "invalid_request"),
    ("qty-float", {"lines": [{"sku": "cake", "qty": 1.5}]}, "invalid_request"),
    ("qty-string", {"lines": [{"sku": "cake", "qty": "1"}]}, "invalid_request"),
    ("qty-bool", {"lines": [{"sku": "cake", "qty": True}]}, "invalid_request"),
    ("qty-null", {"lines": [{"sku": "cake", "qty": None}]}, "invalid_request"),
    ("full-string", {"full": "yes"}, "invalid_request"),
    ("full-one", {"full": 1}, "invalid_request"),
    ("missing-refund-id", {"refund_id": None, "full": True}, None),
    ("unknown-field", {"full": True, "reason": "x"}, "invalid_request"),
    ("unknown-receipt", {"receipt_id": "NOPE", "full": True}, "unknown_receipt"),
    ("more-than-sold", {"lines": [{"sku": "cake", "qty": 3}]}, "refund_exceeds_sale"),
    ("unknown-sku", {"lines": [{"sku": "tea", "qty": 1}]}, "unknown_line"),
    ("at-in-future", {"full": True, "at": "2999-01-01T00:00:00+00:00"}, "at_in_future"),
    ("at-naive", {"full": True, "at": "2025-01-03T00:00:00"}, "invalid_at"),
]


@pytest.mark.parametrize(
    ("change", "code"), [c[1:] for c in REFUND_CASES], ids=[c[0] for c in REFUND_CASES]
)
def test_bad_refunds(
    client: TestClient, card: str, change: dict[str, Any], code: str | None
) -> None:
    before = head(client)
    body: dict[str, Any] = {"refund_id": "F-BAD", "receipt_id": "SOLD", **change}
    body = {k: v for k, v in body.items() if v is not None}
    err = assert_refused(client.post("/v1/refunds", json=body))
    if code is not None:
        assert err["code"] == code
    assert head(client) == before


ENROL_CASES: list[tuple[str, dict[str, Any]]] = [
    ("bad-email", {"email": "not an email"}),
    ("bad-phone", {"phone": "call me"}),
    ("name-number", {"name": 12}),
    ("consents-not-bool", {"consents": {"marketing": "yes"}}),
    ("consents-list", {"consents": ["marketing"]}),
    ("unknown-field", {"birthday": "1990-01-01"}),
    ("unknown-referral", {"referral_code": "FRIEND"}),
    ("at-in-future", {"at": "2999-01-01T00:00:00+00:00"}),
    ("at-naive", {"at": "2025-01-01T00:00:00"}),
    ("long-name", {"name": "x" * 10_000}),
]


@pytest.mark.parametrize("change", [c[1] for c in ENROL_CASES], ids=[c[0] for c in ENROL_CASES])
def test_bad_enrolments(client: TestClient, change: dict[str, Any]) -> None:
    before = head(client)
    assert_refused(client.post("/v1/customers", json=change))
    assert head(client) == before


TRACK = "%B4111111111111111^DOE/JOHN^29121010000000000000?;4111111111111111=29121010000?"


@pytest.mark.parametrize(
    "change",
    [
        {"name": TRACK},
        {"phone": "4111 1111 1111 1111"},
        {"email": "4111111111111111@x.example"},
        {"referral_code": "4111111111111111"},
        {"tags": ["vip", "4111111111111111"]},
    ],
    ids=["name-track", "phone-pan", "email-pan", "referral-pan", "tag-pan"],
)
def test_card_data_typed_into_enrolment_fields_is_refused_unrepeated(
    client: TestClient, change: dict[str, Any]
) -> None:
    """A keyboard card reader typing into a form field: refused before anything is written,
    and the answer does not repeat the number (DESIGN invariant 10)."""
    before = head(client)
    r = client.post("/v1/customers", json=change)
    assert assert_refused(r)["code"] == "payment_card_rejected"
    assert "4111" not in r.text
    assert head(client) == before


def test_card_data_in_a_reason_is_refused(client: TestClient, card: str) -> None:
    customer = client.get(f"/v1/cards/{card}").json()["customer"]["id"]
    before = head(client)
    r = client.post(
        f"/v1/customers/{customer}/adjustments",
        json={"program": "points", "delta": 5, "reason": TRACK},
    )
    assert assert_refused(r)["code"] == "payment_card_rejected"
    assert "4111" not in r.text
    assert head(client) == before


def test_bad_reads_and_routes(client: TestClient, card: str) -> None:
    before = head(client)
    customer = client.get(f"/v1/cards/{card}").json()["customer"]["id"]
    for r, code in [
        (client.get(f"/v1/cards/{make_card_code('PL', 4242)}"), "unknown_card"),
        (client.get("/v1/cards/%20"), None),
        (client.get(f"/v1/cards/{card}", params={"at": "2025-01-01T00:00:00"}), "invalid_at"),
        (client.get(f"/v1/cards/{card}", params={"at": "soon"}), "invalid_at"),
        (client.get("/v1/customers/nope"), "unknown_customer"),
        (client.get(f"/v1/customers/{customer}", params={"limit": 0}), None),
        (client.get(f"/v1/customers/{customer}", params={"limit": "x"}), None),
        (client.get(f"/v1/customers/{customer}", params={"before": -1}), None),
        (client.get("/v1/baskets/commit"), "method_not_allowed"),
        (client.delete("/v1/customers"), "method_not_allowed"),
        (client.get("/v1/nothing-here"), "not_found"),
        (client.post("/v1/cards/lookup", json={}), None),
        (client.post("/v1/cards/lookup", json={"code": ""}), None),
        (client.post(f"/v1/cards/{card}/block", json={"reason": ""}), None),
        (client.post(f"/v1/cards/{card}/block", json={"why": "x"}), None),
    ]:
        err = assert_refused(r)
        if code is not None:
            assert err["code"] == code
    assert head(client) == before


EXTREME_ATS = [
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59+00:00",
]


@pytest.mark.parametrize("at", EXTREME_ATS)
def test_extreme_at_is_a_4xx_not_a_5xx(client: TestClient, card: str, at: str) -> None:
    before = head(client)
    for r in (
        client.post("/v1/baskets/commit", json=basket(card, at=at, receipt_id="X")),
        client.post("/v1/baskets/quote", json=basket(card, at=at)),
        client.get(f"/v1/cards/{card}", params={"at": at}),
        client.post("/v1/customers", json={"at": at}),
    ):
        assert_refused(r)
    assert head(client) == before


# -- property tests -----------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)

scalar = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**12), max_value=10**12)
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(
        ["points", "coffee-card", "espresso", "coffee", "", "2025-01-02T09:00:00+00:00"]
    )
)
line_keys = st.sampled_from(["sku", "category", "qty", "unit_price", "extra"])
lines = st.lists(st.dictionaries(line_keys, scalar, max_size=5), max_size=4) | json_values
redeem = st.lists(
    st.dictionaries(st.sampled_from(["program", "points", "x"]), scalar, max_size=3), max_size=3
)
basket_keys = {
    "receipt_id": scalar,
    "card": scalar,
    "at": scalar,
    "lines": lines,
    "codes": st.lists(scalar, max_size=3) | json_values,
    "redeem": redeem | json_values,
    "flags": st.lists(scalar, max_size=3) | json_values,
    "refund_id": scalar,
    "full": scalar,
    "name": scalar,
    "email": scalar,
    "consents": json_values,
}


def basket_like(card: str) -> st.SearchStrategy[dict[str, Any]]:
    values = dict(basket_keys)
    values["card"] = scalar | st.just(card)
    values["receipt_id"] = scalar | st.just("SOLD")
    return st.fixed_dictionaries({}, optional=values)


ENDPOINTS = ["/v1/baskets/quote", "/v1/baskets/commit", "/v1/refunds", "/v1/customers"]


def post_and_check(client: TestClient, endpoint: str, value: Any) -> None:
    before = head(client)
    raw = json.dumps(value).encode()  # NaN/Infinity and lone surrogates included
    r = client.post(endpoint, content=raw, headers=JSON)
    assert r.status_code < 500, (endpoint, raw[:300], r.text)
    if r.status_code >= 400:
        assert_refused(r)
        assert head(client) == before, (endpoint, raw[:300])


FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@FUZZ
@given(value=json_values)
def test_random_json_never_5xx(client: TestClient, card: str, endpoint: str, value: Any) -> None:
    post_and_check(client, endpoint, value)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@FUZZ
@given(data=st.data())
def test_random_basket_shaped_dicts_never_5xx(
    client: TestClient, card: str, endpoint: str, data: st.DataObject
) -> None:
    value = copy.deepcopy(data.draw(basket_like(card)))
    post_and_check(client, endpoint, value)
