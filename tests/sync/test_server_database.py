"""`pos-loyalty server --db X` with a database it cannot use: one line naming it (password
hidden), exit 1, no traceback, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from pos_loyalty.cli import main
from sync.server.store import ServerDatabaseError, ServerStore, shown_url

from .conftest import Postgres, free_port

GARBAGE = b"these are not the pages of a database\n" * 200


def run(capsys: pytest.CaptureFixture[str], data: Path, *argv: str) -> tuple[int, str]:
    code = main(["--data-dir", str(data), *argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return code, err


@pytest.mark.parametrize(
    ("db", "said"),
    [
        ("sqlite:///{tmp}/garbage.sqlite", "file is not a database"),
        ("foo://somewhere/db", "is not a database URL this server can use"),
        ("{tmp}/server.sqlite", "is not a database URL this server can use"),
        ("sqlite:///{tmp}/no/such/folder/server.sqlite", "unable to open database file"),
        ("postgresql+psycopg://pos:s3cret@127.0.0.1:{port}/sync", "Connection refused"),
    ],
    ids=["not-a-database", "unknown-scheme", "not-a-url", "no-folder", "unreachable"],
)
def test_a_database_the_server_cannot_use_is_named_in_one_line(
    tmp_path: Path, db: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(GARBAGE)
    url = db.format(tmp=tmp_path, port=free_port())
    for argv in (
        ("server", "--db", url, "token", "create", "--terminal", "t1"),
        ("server", "--db", url, "--port", "0"),  # serving: refused before it listens
        ("server", "--db", url, "conflicts"),
    ):
        code, err = run(capsys, tmp_path / "data", *argv)
        assert code == 1
        assert err.startswith("pos-loyalty: server database: ")
        assert said in err
        assert "s3cret" not in err
    assert garbage.read_bytes() == GARBAGE  # left as it was


def test_a_missing_postgresql_database_is_named(
    postgres: Postgres, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(
        capsys,
        tmp_path,
        "server",
        "--db",
        postgres.url("no_such_db"),
        "token",
        "create",
        "--terminal",
        "t1",
    )
    assert code == 1
    assert 'database "no_such_db" does not exist' in err


def test_the_store_raises_its_own_error_and_hides_passwords(tmp_path: Path) -> None:
    with pytest.raises(ServerDatabaseError) as info:
        ServerStore(f"postgresql+psycopg://pos:pa:ss@127.0.0.1:{free_port()}/sync")
    assert "pa:ss" not in str(info.value) and "pos:***@127.0.0.1" in str(info.value)
    assert shown_url("sqlite:////srv/sync.sqlite") == "sqlite:////srv/sync.sqlite"
    assert shown_url("postgresql://u@h/db") == "postgresql://u@h/db"
