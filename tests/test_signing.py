"""The till's coupon signing key file: made whole or not at all, shared by processes that
make it at once, and refused by name when it is not a key (an empty file used to give a
traceback on the command line and a 500 on every coupon through the API)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pos_loyalty.api import create_app
from pos_loyalty.bootstrap import open_service
from pos_loyalty.cli import main
from pos_loyalty.config import load_settings
from pos_loyalty.signing import SigningKeyError, load_or_create_signer


def _make(path: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    out.put(load_or_create_signer(Path(path)).public_hex())


def test_processes_making_the_key_at_once_share_one(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    for attempt in range(2):
        path = tmp_path / f"k{attempt}" / "coupon-signing.key"
        out = ctx.Queue()
        procs = [ctx.Process(target=_make, args=(str(path), out)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        keys = {out.get(timeout=5) for _ in procs}
        assert keys == {load_or_create_signer(path).public_hex()}
        assert path.stat().st_size == 32
        assert [f.name for f in path.parent.iterdir()] == [path.name]  # no temporary left


def test_an_empty_or_foreign_key_file_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "coupon-signing.key"
    key.write_bytes(b"")
    with pytest.raises(SigningKeyError, match="not a raw 32-byte"):
        load_or_create_signer(key)
    service = open_service(load_settings(None, data_dir=tmp_path))
    try:
        client = TestClient(create_app(service), raise_server_exceptions=False)
        customer = client.post("/v1/customers", json={}).json()["customer_id"]
        r = client.post("/v1/coupons", json={"program": "coupon-2off", "customer_id": customer})
        assert r.status_code == 422 and r.json()["error"]["code"] == "coupon_key_unusable"
        assert str(key) in r.json()["error"]["message"]
    finally:
        service.ledger.close()
    pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"
    key.write_text(pem)  # a PEM file, as `cards keygen` writes, where a raw seed belongs
    code = main(["--data-dir", str(tmp_path), "sale", "--quote", "--line", "a:b:1:100",
                 "--code", "C" + "A" * 136])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "coupon_key_unusable" in err and "Traceback" not in err
