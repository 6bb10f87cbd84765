"""How the plugin API fails: the error shape is declared in its OpenAPI for every call, a
405 says which methods are allowed, and an internal fault is answered and logged in one
line that names the route and the exception's type, never what the request carried."""

from __future__ import annotations

import signal
import textwrap
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from pos_loyalty.asgi import ErrorOut
from pos_loyalty.demo import demo_codes
from sync.server.app import create_server_app
from sync.server.store import ServerStore

from .test_agent_process import start_agent

DECLARED = {"400", "404", "409", "413", "422", "500", "503"}


def test_openapi_declares_the_error_shape_for_every_call(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    error_ref = "#/components/schemas/ErrorOut"
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    operations = [
        (path, method, op) for path, item in spec["paths"].items() for method, op in item.items()
    ]
    assert len(operations) >= 15
    for path, method, op in operations:
        responses = op["responses"]
        assert set(responses) >= DECLARED, (method, path, sorted(responses))
        for status in DECLARED:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": error_ref}, (method, path, status)
    for kind in ("png", "svg+xml"):
        path = "/v1/cards/{code}/qr." + kind.split("+")[0]
        assert set(spec["paths"][path]["get"]["responses"]["200"]["content"]) == {f"image/{kind}"}
    at = spec["components"]["schemas"]["BasketIn"]["properties"]["at"]["anyOf"][0]
    assert at["format"] == "date-time"
    detail = spec["components"]["schemas"]["ErrorDetail"]
    assert detail["required"] == ["code", "message"]


def test_real_refusals_have_the_declared_shape(client: TestClient) -> None:
    answers = [
        client.get("/v1/cards/PL0000000000000"),
        client.post("/v1/baskets/quote", content=b"{not json"),
        client.post("/v1/baskets/quote", json={"lines": [{"sku": "x", "qty": 0}]}),
        client.post(
            "/v1/baskets/commit", json={"lines": [{"sku": "x", "qty": 1, "unit_price": 1}]}
        ),
    ]
    assert [a.status_code for a in answers] == [404, 400, 422, 422]
    for answer in answers:
        ErrorOut.model_validate(answer.json())


def test_a_method_not_allowed_names_the_allowed_ones(client: TestClient) -> None:
    r = client.request("TRACE", "/v1/health")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET"
    assert r.json()["error"]["code"] == "method_not_allowed"
    r = client.delete("/v1/baskets/commit")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    # Not taken for a card whose code is "lookup" (GET /v1/cards/{code}).
    r = client.options("/v1/cards/lookup")
    assert r.status_code == 405 and r.headers["allow"] == "POST"


def test_the_sync_server_declares_its_errors_and_names_allowed_methods(tmp_path: Path) -> None:
    store = ServerStore(f"sqlite:///{tmp_path / 'server.sqlite'}")
    try:
        with TestClient(create_server_app(store)) as c:
            r = c.put("/v1/sync/push")
            assert r.status_code == 405 and r.headers["allow"] == "POST"
            spec = c.get("/openapi.json").json()
            refused = c.get("/v1/sync/pull")  # no credentials
            assert refused.status_code == 401
            ErrorOut.model_validate(refused.json())
    finally:
        store.close()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, item in spec["paths"].items():
        for method, op in item.items():
            declared = {s for s in op["responses"] if s.startswith(("4", "5"))}
            assert declared >= {"400", "401", "403", "409", "413", "422", "429", "503"}, (
                method,
                path,
            )


# The real agent process, with one fault planted: every look-up fails with an exception whose
# message holds the scanned text (as a bug in a parser might). A payment card's number must
# not reach the log (invariant 10) even then; uvicorn's own error log would print it, with
# the traceback, if the exception got that far.
FAULTY_AGENT = textwrap.dedent(
    """
    import sys
    from pos_loyalty import service
    from pos_loyalty.cli import main

    def lookup(self, code, at=None):
        raise RuntimeError(f"cannot read {code!r}")

    service.Service.lookup = lookup
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize(
    "scan",
    [
        "4111111111111111",  # a Luhn-valid PAN, as a wedge reader types it
        "PL" + "0" * 12 + "7",
    ],
)
def test_an_internal_fault_is_one_log_line_without_what_was_scanned(
    tmp_path: Path, scan: str
) -> None:
    proc, base = start_agent(tmp_path, "--demo", program=("-c", FAULTY_AGENT))
    try:
        answers = [
            httpx.get(f"{base}/v1/cards/{scan}"),
            httpx.post(f"{base}/v1/cards/lookup", json={"code": scan}),
        ]
        for answer in answers:
            assert answer.status_code == 500
            assert answer.json()["error"]["code"] == "internal_error"
            assert scan not in answer.text
        # Still serving after the faults.
        assert httpx.get(f"{base}/v1/health").status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    log = out.split("plugin API on", 1)[1]  # after the start-up lines (demo card codes)
    assert scan not in log
    assert "Traceback" not in log
    assert log.count("internal error in /v1/cards/{code}: RuntimeError") == 1
    assert log.count("internal error in /v1/cards/lookup: RuntimeError") == 1
    assert demo_codes("PL")[0] not in log
