"""Pairing and the operator's `server` commands: a token made for another terminal is
refused before it is used, pairing again replaces the till's credential, ids are checked
as a till's are, a store's region can be set, a busy port is one line."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from pos_loyalty.cli import main
from sync.client import SyncFailed, pair
from sync.server import schema as server_schema
from sync.server.store import ServerStore, SyncError

from .conftest import LiveServer, Till
from .helpers import pair_till, serve, sync_round

EXAMPLE = Path(__file__).parents[2] / "config.example.toml"


def till_config(tmp_path: Path, terminal: str, *, region_only: bool = False) -> Path:
    """The example configuration with this terminal id and a data dir under ``tmp_path``."""
    text = re.sub(r'(?m)^id = "till-1"$', f'id = "{terminal}"', EXAMPLE.read_text(), count=1)
    text = re.sub(r'(?m)^data_dir = ""$', f'data_dir = "{tmp_path / "till"}"', text, count=1)
    if region_only:
        text = re.sub(r"(?m)^region_only = false$", "region_only = true", text, count=1)
    path = tmp_path / "till.toml"
    path.write_text(text)
    return path


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------- F4: wrong terminal id


def test_a_token_for_another_terminal_is_refused_before_it_is_used(store: ServerStore) -> None:
    token = store.create_pairing_token("till-7", "m1", "s1")
    with pytest.raises(SyncError) as refused:
        store.pair(token, "till-1")
    assert (refused.value.status, refused.value.code) == (409, "terminal_mismatch")
    assert "till-7" in refused.value.message and "till-1" in refused.value.message
    auth, credential = store.pair(token, "till-7")  # the token is still good
    assert auth.terminal_id == "till-7" and store.authenticate(credential) == auth
    with pytest.raises(SyncError, match="already used"):
        store.pair(token, "till-7")
    # A till of an older release names no terminal: it pairs as before.
    auth, _ = store.pair(store.create_pairing_token("till-8", "m1", "s1"))
    assert auth.terminal_id == "till-8"


def test_pair_with_a_wrong_terminal_id_can_be_fixed_and_paired_again(
    store: ServerStore,
    live_server: LiveServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token = store.create_pairing_token("till-7", "m1", "s1")
    conf = till_config(tmp_path, "till-1")  # a typo: the token is for till-7
    assert main(["--config", str(conf), "pair", "--server", live_server.url, "--token", token]) == 1
    err = one_line(capsys.readouterr().err)
    assert "terminal_mismatch" in err and "till-7" in err and "not used" in err
    assert store.count("tokens") == 1  # no credential was issued
    conf.write_text(conf.read_text().replace('id = "till-1"', 'id = "till-7"', 1))
    argv = ["--config", str(conf), "pair", "--server", live_server.url, "--token", token]
    assert main([*argv, "--no-bootstrap"]) == 0, capsys.readouterr().err
    assert "paired till till-7" in capsys.readouterr().out


def test_a_till_pairs_with_a_server_that_does_not_know_the_terminal_field(
    store: ServerStore, live_server: LiveServer
) -> None:
    """A server of an older release refuses the unknown field (422, extra inputs): the till
    asks again without it and checks the answer itself, as before."""

    def older(request: httpx.Request) -> httpx.Response:
        if b'"terminal_id"' in request.content:
            return httpx.Response(
                422,
                json={
                    "error": {
                        "code": "invalid_request",
                        "message": "terminal_id: Extra inputs are not permitted.",
                    }
                },
            )
        with httpx.Client() as real:
            answer = real.post(
                str(request.url),
                content=request.content,
                headers={"content-type": "application/json"},
            )
        return httpx.Response(answer.status_code, content=answer.content)

    token = store.create_pairing_token("till-7", "m1", "s1")
    with httpx.Client(transport=httpx.MockTransport(older)) as http:
        creds = pair(live_server.url, token, terminal_id="till-7", http=http)
    assert creds.terminal_id == "till-7"


# ------------------------------------------------------- F5: pairing again replaces the old


def test_pairing_again_revokes_the_earlier_credential_not_the_till(
    store: ServerStore, live_server: LiveServer, make_till: Callable[..., Till]
) -> None:
    till, other = make_till("till-7"), make_till("till-8")
    first = pair_till(store, till, live_server.url)
    pair_till(store, other, live_server.url)
    second = pair_till(store, till, live_server.url)  # a new token, the same till
    assert first.credential != second.credential
    old = httpx.get(
        live_server.url + "/v1/sync/pull",
        headers={"authorization": f"Bearer {first.credential}"},
    )
    assert old.status_code == 401, old.text
    assert old.json()["error"]["code"] == "credentials_replaced"
    sync_round(till)  # the new credential works: the till is not revoked
    sync_round(other)  # other tills' credentials are untouched
    (row,) = [t for t in store.terminals() if t["id"] == "till-7"]
    assert row["status"] == "active"
    # Revoking the till still answers as a revocation, for every credential it had.
    store.revoke("till-7")
    for creds in (first, second):
        r = httpx.get(
            live_server.url + "/v1/sync/pull",
            headers={"authorization": f"Bearer {creds.credential}"},
        )
        assert (r.status_code, r.json()["error"]["code"]) == (403, "terminal_revoked")
    with pytest.raises(SyncFailed) as exc:
        sync_round(till)
    assert exc.value.code == "terminal_revoked"


# ----------------------------------------------------------------------- F6: ids, one line


@pytest.mark.parametrize(
    "option, value",
    [
        ("--terminal", ""),
        ("--terminal", "till 7"),
        ("--terminal", "t" * 65),
        ("--terminal", "-till"),
        ("--merchant", "ac:me"),
        ("--store", "berlin/1"),
        ("--store", "ü"),
    ],
)
def test_token_create_refuses_ids_no_till_can_have(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    ids = {"--terminal": "till-1", "--merchant": "acme", "--store": "s1", option: value}
    argv = ["--data-dir", str(tmp_path), "server", "--db", db_url, "token", "create"]
    assert main([*argv, *(f"{k}={v}" for k, v in ids.items())]) == 2
    err = one_line(capsys.readouterr().err)
    assert "is not an id" in err and repr(value) in err
    store = ServerStore(db_url)
    try:  # nothing registered
        assert store.count("terminals") == 0 and store.count("tokens") == 0
        with pytest.raises(SyncError) as exc:  # the store refuses them too (any caller)
            store.create_pairing_token(ids["--terminal"], ids["--merchant"], ids["--store"])
        assert (exc.value.status, exc.value.code) == (422, "invalid_id")
    finally:
        store.close()
    assert main([*argv, "--terminal", "t" * 64, "--merchant", "acme", "--store", "s1"]) == 0


def test_a_database_error_in_a_server_command_is_one_line(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Anything the database refuses (here: a column made too narrow for the ids the server
    takes) is one line and exit 1, not a traceback."""
    store = ServerStore(db_url)
    try:
        if store.is_sqlite:  # SQLite does not enforce lengths: make it refuse the row
            ddl = (
                "CREATE TRIGGER narrow BEFORE INSERT ON terminals WHEN length(NEW.id) > 8 "
                "BEGIN SELECT RAISE(ABORT, 'value too long'); END"
            )
        else:
            ddl = "ALTER TABLE terminals ALTER COLUMN id TYPE varchar(8)"
        with store.engine.begin() as conn:
            conn.exec_driver_sql(ddl)
    finally:
        store.close()
    argv = ["--data-dir", str(tmp_path), "server", "--db", db_url, "token", "create"]
    assert main([*argv, "--terminal", "t" * 20, "--merchant", "acme", "--store", "s1"]) == 1
    err = one_line(capsys.readouterr().err)
    assert err.startswith("pos-loyalty: server database: ") and "too long" in err


# --------------------------------------------------------------------- F7: a store's region


def test_set_region_lets_a_region_only_till_bootstrap(
    store: ServerStore,
    live_server: LiveServer,
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = ["--data-dir", str(tmp_path / "srv"), "server", "--db", db_url]
    conf = till_config(tmp_path, "till-4", region_only=True)
    assert main([*server, "token", "create", "--terminal", "till-4", "--store", "berlin-1"]) == 0
    token = capsys.readouterr().out.strip()
    argv = ["--config", str(conf), "pair", "--server", live_server.url, "--token", token]
    assert main(argv) == 1
    assert "no_region" in one_line(capsys.readouterr().err)

    assert main([*server, "stores", "set-region", "berlin-1", "north", "--merchant", "x"]) == 1
    assert "store_of_other_merchant" in one_line(capsys.readouterr().err)
    assert main([*server, "stores", "set-region", "nowhere", "north"]) == 1
    assert "unknown_store" in one_line(capsys.readouterr().err)
    assert main([*server, "stores", "set-region", "berlin-1", "north pole"]) == 2
    assert "is not an id" in one_line(capsys.readouterr().err)
    assert main([*server, "stores", "set-region", "berlin-1"]) == 2
    capsys.readouterr()
    assert (
        main([*server, "stores", "set-region", "berlin-1", "north", "--merchant", "default"]) == 0
    )
    assert capsys.readouterr().out == "store berlin-1: region north (was none)\n"

    assert main(["--config", str(conf), "sync", "--bootstrap"]) == 0, capsys.readouterr().err
    assert main(["--config", str(conf), "sync", "--once"]) == 0, capsys.readouterr().err

    # token create --region sets it too (new or existing store); --clear removes it.
    assert (
        main([*server, "token", "create", "--terminal", "t-9", "--store", "hh", "--region", "n"])
        == 0
    )
    assert main([*server, "stores", "set-region", "berlin-1", "--clear"]) == 0
    capsys.readouterr()
    with store.engine.connect() as conn:
        stores = server_schema.stores
        regions = {r.id: r.region for r in conn.execute(select(stores.c.id, stores.c.region))}
    assert regions == {"berlin-1": None, "hh": "n"}


# ------------------------------------------------------------------------ F9: a busy port


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_server_on_a_busy_port_is_one_line_and_exit_1(db_url: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "pos_loyalty.cli", "--data-dir", str(tmp_path), "server"]
            + ["--db", db_url, "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done
    assert done.stdout == ""  # nothing claims it started
    err = one_line(done.stderr)
    assert err.startswith(f"pos-loyalty: cannot listen on 127.0.0.1:{port}: ")
    assert "in use" in err
    # A free port still serves (the check does not keep it).
    free = serve(db_url, tmp_path, port)
    free.terminate()
    free.wait(15)
