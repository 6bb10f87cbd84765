"""Program configuration distributed by the central server, with a version.

Operator: ``server programs set/show`` (checked with the till's own validation, versions only
go up, the same text again keeps the version). Till: each round asks with the version it has,
checks a newer one itself, stores it atomically and the running service switches between
commands; a bad one is refused and the till keeps what it had; a restart uses the stored one;
a merchant never gets another merchant's configuration.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from pos_loyalty import server_programs
from pos_loyalty.api import create_app
from pos_loyalty.bootstrap import open_service, start_embedded_sync
from pos_loyalty.cli import main
from pos_loyalty.domain import engine
from pos_loyalty.domain.basket import Basket, BasketLine
from pos_loyalty.ledger.replication import Credentials
from pos_loyalty.server_programs import Follower, ServerPrograms, StoredPrograms
from pos_loyalty.service import Profile, SaleRequest, Service
from sync.client import RoundResult, SyncClient
from sync.protocol import ProgramConfig
from sync.server import schema
from sync.server.store import ServerStore, SyncError

from .conftest import LiveServer, Till
from .helpers import pair_till

FIVE_PER_EURO = """\
# HQ programs: 5 points per euro
[[programs]]
id = "points"
kind = "points"
label = "Points"
points_per_unit = 5
unit = 100
"""

TWO_PER_EURO = FIVE_PER_EURO.replace("points_per_unit = 5", "points_per_unit = 2")

BAD = FIVE_PER_EURO.replace("points_per_unit = 5", 'points_per_unit = "five"')


def basket() -> Basket:
    return Basket((BasketLine("item", 1, 1000, "bakery"),), (), ())


def earned(service: Service, card: str) -> int:
    return int(service.quote(SaleRequest(basket(), card))["earned"].get("points", 0))


def commit(service: Service, card: str, receipt: str) -> dict[str, Any]:
    raw = {"card": card, "receipt": receipt}
    return service.commit(SaleRequest(basket(), card, receipt, None, raw))


class TillSync:
    """One till's sync client with the program sink wired to its service (as bootstrap
    does), kept across rounds; counts what the sink accepted."""

    def __init__(self, till: Till, url: str | None = None, http: httpx.Client | None = None):
        creds = till.replica.credentials()
        assert creds is not None
        if url is not None:
            creds = Credentials(
                url, creds.terminal_id, creds.merchant_id, creds.store_id, creds.credential
            )
        self.sink = ServerPrograms(till.service.settings)
        self.accepted: list[int] = []
        self.sink.subscribe(lambda s: self.accepted.append(s.version))

        def apply(stored: StoredPrograms) -> None:
            till.service.use_programs(stored.programs, stored.version)

        self.sink.subscribe(apply)
        self.client = SyncClient(till.replica, creds, http=http, timeout=5.0, programs=self.sink)

    def round(self) -> RoundResult:
        return self.client.round()

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def syncs() -> Iterator[Callable[..., TillSync]]:
    made: list[TillSync] = []

    def make(till: Till, url: str | None = None, http: httpx.Client | None = None) -> TillSync:
        s = TillSync(till, url, http)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def publish_unchecked(store: ServerStore, merchant: str, version: int, text: str) -> None:
    """Put a configuration in the server's table without the server's own check (what a
    newer server release or a damaged database could hold)."""
    with store.engine.begin() as conn:
        conn.execute(
            update(schema.programs)
            .where(schema.programs.c.merchant_id == merchant)
            .values(version=version, config=text)
        )


def enrolled(till: Till) -> str:
    return str(till.service.enrol(Profile(name="Eve"))["card"]["code"])


# --------------------------------------------------------------------------- operator side


def test_store_versions_validation_and_merchants(store: ServerStore) -> None:
    store.ensure_terminal("t1", "m1", "s1")
    store.ensure_terminal("t2", "m2", "s2")
    assert store.program_config("m1") == (0, "")
    with pytest.raises(SyncError) as refused:
        store.set_program_config("nobody", FIVE_PER_EURO)
    assert refused.value.code == "unknown_merchant"
    with pytest.raises(SyncError) as refused:
        store.set_program_config("m1", BAD, source="hq.toml")
    assert refused.value.code == "invalid_program_config"
    assert refused.value.message.startswith("hq.toml: programs[0].points_per_unit: ")
    assert store.program_config("m1") == (0, "")  # nothing stored
    assert store.set_program_config("m1", FIVE_PER_EURO) == (1, True)
    assert store.set_program_config("m1", FIVE_PER_EURO) == (1, False)  # same text: no-op
    assert store.set_program_config("m1", TWO_PER_EURO) == (2, True)
    assert store.set_program_config("m1", FIVE_PER_EURO) == (3, True)  # back: still goes up
    with pytest.raises(SyncError):
        store.set_program_config("m1", "[terminal]\nid = 'x'\n")  # not a program file
    assert store.program_config("m1") == (3, FIVE_PER_EURO)
    assert store.program_config("m2") == (0, "")  # another merchant: untouched


def _cli(*argv: str) -> int:
    return main(list(argv))


def test_cli_programs_set_and_show(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "cli-data")
    base = ("--data-dir", data, "server", "--db", db_url)
    good = tmp_path / "programs.toml"
    good.write_text(FIVE_PER_EURO)
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD)
    assert _cli(*base, "token", "create", "--terminal", "t1", "--merchant", "acme") == 0
    capsys.readouterr()

    assert _cli(*base, "programs", "set", "--merchant", "acme", "--file", str(bad)) == 2
    err = capsys.readouterr().err
    assert f"{bad}: programs[0].points_per_unit: must be zero or a positive integer" in err
    assert "nothing was stored" in err
    assert _cli("--json", *base, "programs", "show", "--merchant", "acme") == 0
    assert json.loads(capsys.readouterr().out)["version"] == 0

    assert _cli(*base, "programs", "set", "--merchant", "acme", "--file", str(good)) == 0
    assert "version 1 stored" in capsys.readouterr().out
    assert _cli("--json", *base, "programs", "set", "--merchant", "acme", "--file", str(good)) == 0
    assert json.loads(capsys.readouterr().out) == {
        "merchant_id": "acme",
        "version": 1,
        "changed": False,
    }
    good.write_text(TWO_PER_EURO)
    assert _cli(*base, "programs", "set", "--merchant", "acme", "--file", str(good)) == 0
    assert "version 2 stored" in capsys.readouterr().out
    assert _cli(*base, "programs", "show", "--merchant", "acme") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "merchant acme: program configuration version 2"
    assert out.split("\n", 1)[1] == TWO_PER_EURO

    assert _cli(*base, "programs", "set", "--merchant", "ghost", "--file", str(good)) == 1
    assert "unknown_merchant" in capsys.readouterr().err
    assert _cli(*base, "programs", "set", "--merchant", "acme", "--file", str(tmp_path)) == 2
    assert "cannot read the file" in capsys.readouterr().err


# --------------------------------------------------------------------------- till side


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_till_fetches_applies_and_keeps_receipts(
    store: ServerStore,
    live_server: LiveServer,
    make_till: Callable[..., Till],
    syncs: Callable[..., TillSync],
) -> None:
    till = make_till("till-a")
    pair_till(store, till, live_server.url, merchant="m1")
    card = enrolled(till)
    assert earned(till.service, card) == 10  # the demo file: 1 point per euro
    before = commit(till.service, card, "R-1")
    sync = syncs(till)
    assert sync.round().programs_applied is None  # the server has none yet
    assert till.service.programs_version == 0

    store.set_program_config("m1", FIVE_PER_EURO)
    result = sync.round()
    assert result.programs_applied == 1
    assert till.service.programs_version == 1
    assert earned(till.service, card) == 50  # the next quote uses the new programs
    # A committed receipt keeps its answer: its idempotent retry replays it unchanged.
    assert commit(till.service, card, "R-1") == before
    after = commit(till.service, card, "R-2")
    assert after["earned"] == {"points": 50}
    stored = (till.data_dir / server_programs.FILE_NAME).read_text()
    assert "server_version = 1" in stored and stored.endswith(FIVE_PER_EURO)
    health = TestClient(create_app(till.service)).get("/v1/health").json()
    assert health["programs"] == {"version": 1, "source": "server"}

    # Equal version: the server answers "unchanged" and nothing is applied again.
    assert sync.round().programs_applied is None
    assert sync.accepted == [1]
    http = httpx.Client()
    creds = till.replica.credentials()
    assert creds is not None
    auth = {"authorization": f"Bearer {creds.credential}"}
    answer = ProgramConfig.model_validate_json(
        http.get(f"{live_server.url}/v1/sync/config", params={"have": 1}, headers=auth).content
    )
    assert (answer.unchanged, answer.version, answer.config) == (True, 1, "")
    http.close()

    store.set_program_config("m1", TWO_PER_EURO)
    assert sync.round().programs_applied == 2
    assert earned(till.service, card) == 20
    assert sync.accepted == [1, 2]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_older_server_version_is_ignored(
    store: ServerStore,
    live_server: LiveServer,
    make_till: Callable[..., Till],
    syncs: Callable[..., TillSync],
) -> None:
    till = make_till("till-a")
    pair_till(store, till, live_server.url, merchant="m1")
    card = enrolled(till)
    sync = syncs(till)
    # The till holds v5 (e.g. the server was restored from an older backup since).
    sync.sink.accept("m1", 5, FIVE_PER_EURO)
    assert till.service.programs_version == 5
    store.set_program_config("m1", TWO_PER_EURO)  # the server's v1
    assert sync.round().programs_applied is None
    assert till.service.programs_version == 5
    assert earned(till.service, card) == 50
    assert sync.sink.accept("m1", 4, TWO_PER_EURO) is None  # older: ignored by the sink too
    assert till.service.use_programs(till.service.programs, 3) is False  # and the service
    assert earned(till.service, card) == 50


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (BAD, "programs[0].points_per_unit: must be zero or a positive integer"),
        ('currency = "USD"\n' + FIVE_PER_EURO, "currency: is 'USD' but this till's"),
        ("[[programs]\n", "invalid TOML"),
        (FIVE_PER_EURO + "[api]\nport = 1\n", "api: unknown key"),
    ],
)
def test_bad_config_from_server_is_refused_and_till_keeps_its_programs(
    store: ServerStore,
    live_server: LiveServer,
    make_till: Callable[..., Till],
    syncs: Callable[..., TillSync],
    text: str,
    problem: str,
) -> None:
    till = make_till("till-a")
    pair_till(store, till, live_server.url, merchant="m1")
    card = enrolled(till)
    store.set_program_config("m1", FIVE_PER_EURO)
    sync = syncs(till)
    assert sync.round().programs_applied == 1
    # A configuration the till cannot use reaches the server's table (a newer server
    # release, a damaged database): bypass the server's own check.
    publish_unchecked(store, "m1", 2, text)
    result = sync.round()  # the round itself succeeds: push and pull are not held up
    assert result.programs_applied is None
    assert sync.client.programs_problem is not None
    assert sync.client.programs_problem.startswith("program configuration v2 refused: ")
    assert problem in sync.client.programs_problem
    assert till.service.programs_version == 1
    assert earned(till.service, card) == 50
    assert "server_version = 1" in (till.data_dir / server_programs.FILE_NAME).read_text()
    # Not fetched and refused again each round; a fixed v3 is taken.
    sync.round()
    assert sync.accepted == [1]
    store.set_program_config("m1", TWO_PER_EURO)
    assert sync.round().programs_applied == 3
    assert sync.client.programs_problem is None
    assert earned(till.service, card) == 20


class _LosesConfigRequests(httpx.HTTPTransport):
    """A real HTTP transport whose ``/v1/sync/config`` requests after the first ``keep``
    fail as a dropped connection would (the server never sees them)."""

    def __init__(self, keep: int) -> None:
        super().__init__()
        self.keep, self.seen = keep, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/sync/config":
            self.seen += 1
            if self.seen > self.keep:
                raise httpx.ConnectError("connection dropped", request=request)
        return super().handle_request(request)


def test_a_refusal_whose_report_is_lost_is_reported_at_the_next_round(
    store: ServerStore,
    live_server: LiveServer,
    make_till: Callable[..., Till],
    syncs: Callable[..., TillSync],
) -> None:
    till = make_till("till-a")
    pair_till(store, till, live_server.url, merchant="m1")
    store.set_program_config("m1", FIVE_PER_EURO)
    assert syncs(till).round().programs_applied == 1
    publish_unchecked(store, "m1", 2, BAD)
    # The fetch of v2 gets through; the report of its refusal right after it is lost.
    transport = _LosesConfigRequests(keep=1)
    sync = syncs(till, http=httpx.Client(transport=transport, timeout=10))
    result = sync.round()  # the lost report does not fail the round
    assert result.programs_applied is None and result.pushed == 0
    assert transport.seen == 2
    assert sync.client.programs_problem is not None
    assert _terminal(store, "till-a")["programs_refused"] is None  # not heard yet
    transport.keep = 10
    sync.round()
    row = _terminal(store, "till-a")
    assert (row["programs_version"], row["programs_refused"]) == (1, 2)
    assert row["programs_problem"].startswith("program configuration v2 refused: ")


def _terminal(store: ServerStore, terminal_id: str) -> dict[str, Any]:
    (row,) = [r for r in store.terminals() if r["id"] == terminal_id]
    return row


def test_server_terminals_lists_versions_last_seen_and_refusals(
    store: ServerStore,
    live_server: LiveServer,
    make_till: Callable[..., Till],
    syncs: Callable[..., TillSync],
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b, c = make_till("till-a"), make_till("till-b"), make_till("till-c")
    pair_till(store, a, live_server.url, merchant="m1", store_id="s1")
    pair_till(store, b, live_server.url, merchant="m1", store_id="s2")
    pair_till(store, c, live_server.url, merchant="m2", store_id="s9")
    assert [r["id"] for r in store.terminals("m1")] == ["till-a", "till-b"]
    assert [r["id"] for r in store.terminals("m2")] == ["till-c"]
    fresh = _terminal(store, "till-a")
    assert (fresh["last_seen_at"], fresh["programs_version"], fresh["programs_current"]) == (
        None,
        None,
        0,
    )

    store.set_program_config("m1", FIVE_PER_EURO)
    sync = syncs(a)
    assert sync.round().programs_applied == 1
    # The version it runs now reaches the server in the same round, not the next one.
    row = _terminal(store, "till-a")
    assert (row["programs_version"], row["programs_current"]) == (1, 1)
    assert (row["programs_version"], row["programs_refused"]) == (1, None)
    assert row["last_seen_at"] is not None
    seen = row["last_seen_at"]
    sync.round()  # nothing changed: "last seen" is not rewritten every round
    assert _terminal(store, "till-a")["last_seen_at"] == seen
    monkeypatch.setattr("sync.server.store.SEEN_EVERY", 0.0)
    sync.round()
    assert _terminal(store, "till-a")["last_seen_at"] > seen

    # A configuration the till cannot use (bypassing the server's check, as above): the
    # refusal and its reason reach the server in the round that refused it.
    publish_unchecked(store, "m1", 2, BAD)
    sync.round()
    row = _terminal(store, "till-a")
    assert (row["programs_version"], row["programs_refused"], row["programs_current"]) == (
        1,
        2,
        2,
    )
    problem = row["programs_problem"]
    assert problem.startswith("program configuration v2 refused: ")
    assert "points_per_unit" in problem

    # A push alone (no configuration check) also counts as heard from.
    b.service.enrol(Profile(name="Bo"))
    client = SyncClient(b.replica, b.replica.credentials(), timeout=5.0)  # type: ignore[arg-type]
    try:
        assert client.push().accepted == 2
    finally:
        client.close()
    row = _terminal(store, "till-b")
    assert row["last_seen_at"] is not None and row["programs_version"] is None
    assert row["head_seq"] == 2

    # A till of an older release sends only ``have``: taken as the version it runs.
    creds = b.replica.credentials()
    assert creds is not None
    auth = {"authorization": f"Bearer {creds.credential}"}
    with httpx.Client(base_url=live_server.url, headers=auth) as http:
        assert http.get("/v1/sync/config", params={"have": 2}).status_code == 200
        assert _terminal(store, "till-b")["programs_version"] == 2
        # Hostile or broken reports are refused and change nothing.
        hostile: list[dict[str, str | int]] = [
            {"have": 1, "running": -1},
            {"have": 1, "refused": 0},
            {"have": 1, "running": "x"},
            {"have": 1, "refused": 3, "problem": "x" * 301},
        ]
        for params in hostile:
            answer = http.get("/v1/sync/config", params=params)
            assert answer.status_code == 422, params
            assert answer.json()["error"]["code"] == "invalid_request"
        assert _terminal(store, "till-b")["programs_version"] == 2
        assert _terminal(store, "till-b")["programs_refused"] is None

    store.revoke("till-c")
    base = ("--data-dir", str(tmp_path / "cli-data"), "server", "--db", db_url)
    assert _cli(*base, "terminals") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("m1/s1/till-a active: seq 0 (epoch 1), last seen 20")
    assert lines[0].endswith(", programs v1, behind v2; refused v2: " + problem)
    assert lines[1].startswith("m1/s2/till-b active: seq 2 (epoch 1), last seen 20")
    assert lines[1].endswith(", programs v2")
    assert lines[2] == (
        "m2/s9/till-c revoked: seq 0 (epoch 1), last seen never, "
        "programs: not reported (current v0)"
    )
    assert _cli("--json", *base, "terminals", "--merchant", "m2") == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["id"], listed["status"], listed["programs_current"]) == ("till-c", "revoked", 0)


def test_foreign_merchant_answer_is_refused(make_till: Callable[..., Till]) -> None:
    till = make_till("till-a")
    till.replica.save_credentials(Credentials("http://hq.test", "till-a", "m1", "s1", "c" * 20))

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/sync/config":
            body = ProgramConfig(version=4, config=FIVE_PER_EURO, merchant_id="m2")
            return httpx.Response(200, content=body.model_dump_json())
        return httpx.Response(404)

    sink = ServerPrograms(till.service.settings)
    creds = till.replica.credentials()
    assert creds is not None
    client = SyncClient(
        till.replica,
        creds,
        http=httpx.Client(transport=httpx.MockTransport(handler)),
        programs=sink,
    )
    assert client.fetch_programs() is None
    assert client.programs_problem is not None and "merchant 'm2'" in client.programs_problem
    assert not (till.data_dir / server_programs.FILE_NAME).exists()


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
def test_each_merchant_gets_only_its_own(
    store: ServerStore,
    live_server: LiveServer,
    make_till: Callable[..., Till],
    syncs: Callable[..., TillSync],
) -> None:
    a = make_till("till-a")
    b = make_till("till-b")
    pair_till(store, a, live_server.url, merchant="m1", store_id="s1")
    pair_till(store, b, live_server.url, merchant="m2", store_id="s2")
    card_b = enrolled(b)
    store.set_program_config("m1", FIVE_PER_EURO)
    sync_a, sync_b = syncs(a), syncs(b)
    assert sync_a.round().programs_applied == 1
    assert sync_b.round().programs_applied is None  # m2 has none: b keeps its own file
    assert b.service.programs_version == 0
    assert earned(b.service, card_b) == 10
    assert not (b.data_dir / server_programs.FILE_NAME).exists()
    store.set_program_config("m2", TWO_PER_EURO)
    store.set_program_config("m2", FIVE_PER_EURO)
    assert sync_b.round().programs_applied == 2
    assert earned(b.service, card_b) == 50
    assert a.service.programs_version == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_restart_uses_the_stored_configuration(
    store: ServerStore,
    live_server: LiveServer,
    make_till: Callable[..., Till],
    syncs: Callable[..., TillSync],
) -> None:
    till = make_till("till-a")
    pair_till(store, till, live_server.url, merchant="m1")
    card = enrolled(till)
    store.set_program_config("m1", FIVE_PER_EURO)
    syncs(till).round()
    settings = till.service.settings
    till.service.ledger.close()

    restarted = open_service(settings)  # no server needed: it is on disk
    try:
        assert restarted.programs_version == 1
        assert earned(restarted, card) == 50
    finally:
        restarted.ledger.close()

    # A damaged stored file: the till starts with its own programs and fetches again.
    path = till.data_dir / server_programs.FILE_NAME
    path.write_text(path.read_text().replace("points_per_unit = 5", "points_per_unit = -5"))
    restarted = open_service(settings)
    try:
        assert restarted.programs_version == 0
        assert earned(restarted, card) == 10
        assert ServerPrograms(settings).have("m1") == 0
    finally:
        restarted.ledger.close()
    # Stored for another merchant (the till was re-paired): not used.
    ServerPrograms(settings).accept("m9", 3, FIVE_PER_EURO)
    restarted = open_service(settings)
    try:
        assert restarted.programs_version == 0
    finally:
        restarted.ledger.close()


def test_a_running_command_keeps_the_set_it_started_with(
    make_till: Callable[..., Till], monkeypatch: pytest.MonkeyPatch
) -> None:
    till = make_till("till-a", sync_enabled=False)
    service = till.service
    card = enrolled(till)
    new = ServerPrograms(service.settings)._build(FIVE_PER_EURO, "test")
    real_quote = engine.quote

    def quote_then_swap(*args: Any, **kwargs: Any) -> Any:
        out = real_quote(*args, **kwargs)
        service.use_programs(new, 1)  # the sync thread switches mid-command
        return out

    monkeypatch.setattr(engine, "quote", quote_then_swap)
    response = commit(service, card, "R-1")
    # The whole sale used the old set: its receipt lists the demo's stamp card too.
    assert response["earned"] == {"points": 10}
    assert "coffee-card" in response["balances"]
    monkeypatch.setattr(engine, "quote", real_quote)
    assert service.programs_version == 1
    assert set(service.quote(SaleRequest(basket(), card))["balances"]) == {"points"}
    assert commit(service, card, "R-1") == response  # replayed as committed


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_embedded_worker_switches_the_running_service(
    store: ServerStore, live_server: LiveServer, make_till: Callable[..., Till]
) -> None:
    till = make_till("till-a")
    pair_till(store, till, live_server.url, merchant="m1")
    card = enrolled(till)
    store.set_program_config("m1", FIVE_PER_EURO)
    embedded = start_embedded_sync(till.service)
    try:
        client = TestClient(create_app(till.service, status=embedded.status))
        deadline = time.monotonic() + 20
        health = client.get("/v1/health").json()
        while health["programs"]["version"] != 1:
            assert time.monotonic() < deadline, health
            time.sleep(0.1)
            health = client.get("/v1/health").json()
        assert health["sync"]["programs"] == {"version": 1, "problem": None}
        assert earned(till.service, card) == 50
    finally:
        embedded.stop()


def test_follower_applies_a_file_written_by_a_separate_sync_process(
    make_till: Callable[..., Till],
) -> None:
    till = make_till("till-a", sync_enabled=False)
    card = enrolled(till)
    applied: list[StoredPrograms] = []

    def apply(stored: StoredPrograms) -> None:
        applied.append(stored)
        till.service.use_programs(stored.programs, stored.version)

    follower = Follower(till.service.settings, apply, merchant_id="m1", interval=60)
    assert follower.check() is False  # no file yet
    ServerPrograms(till.service.settings).accept("m1", 1, FIVE_PER_EURO)  # "the other process"
    assert follower.check() is True
    assert follower.check() is False  # unchanged file: nothing to do
    assert [s.version for s in applied] == [1]
    assert earned(till.service, card) == 50
    path = till.data_dir / server_programs.FILE_NAME
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert follower.check() is True  # touched, same version: the service ignores it
    assert till.service.programs_version == 1


def test_terminal_status_line_shows_the_version_in_use() -> None:
    from pos_loyalty.ui.status import StatusState, status_text

    state = StatusState(terminal_id="till-1", store_id="store-1")
    assert "programs v" not in status_text(state)
    assert "programs v3" in status_text(StatusState(terminal_id="t", programs_version=3))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cli_sync_process_stores_and_the_next_command_uses_it(
    store: ServerStore,
    live_server: LiveServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pos_loyalty.config import load_settings

    data = tmp_path / "cli-till"
    terminal = load_settings(None, data_dir=data).terminal_id
    token = store.create_pairing_token(terminal, "m1", "s1")
    base = ["--data-dir", str(data), "--json"]
    assert main([*base, "pair", "--server", live_server.url, "--token", token]) == 0
    capsys.readouterr()
    assert main([*base, "enrol", "--name", "Eve"]) == 0
    card = json.loads(capsys.readouterr().out)["card"]["code"]
    quote = [*base, "sale", "--quote", "--card", card, "--line", "item:bakery:1:1000"]
    assert main(quote) == 0
    assert json.loads(capsys.readouterr().out)["earned"] == {"points": 10}

    store.set_program_config("m1", FIVE_PER_EURO)
    assert main([*base, "sync", "--once"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["programs"] == {"version": 1, "problem": None}
    assert main(quote) == 0  # a new process: starts with the stored configuration
    assert json.loads(capsys.readouterr().out)["earned"] == {"points": 50}


def test_program_file_takes_guards_and_nudges_only_when_it_has_them() -> None:
    from pos_loyalty.config import ConfigError, load_programs_text, load_settings

    own = load_settings(None).programs
    plain = load_programs_text(FIVE_PER_EURO, "hq.toml", currency="EUR", defaults=own)
    assert (plain.max_discount_bp, plain.nudges) == (own.max_discount_bp, own.nudges)
    assert [p.id for p in plain.programs] == ["points"]
    text = "[guards]\nmax_discount_bp = 1234\n[nudges]\nenabled = false\n" + FIVE_PER_EURO
    full = load_programs_text(text, "hq.toml", currency="EUR", defaults=own)
    assert full.max_discount_bp == 1234 and full.nudges.enabled is False
    with pytest.raises(ConfigError, match="needs at least one"):
        load_programs_text("# nothing yet\n", "hq.toml")
    with pytest.raises(ConfigError, match=r"^hq.toml: guards.max_discount_bp: must be"):
        load_programs_text("[guards]\nmax_discount_bp = 20000\n" + FIVE_PER_EURO, "hq.toml")
