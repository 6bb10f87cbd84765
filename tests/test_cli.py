"""The ``pos-loyalty`` command line, in-process (``cli.main``) on a real ledger in tmp_path.

Refusals exit 1, usage and configuration errors exit 2; either way one line on stderr and
never a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pos_loyalty import cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DAY1 = "2025-01-02T09:00:00+00:00"


class Cli:
    def __init__(self, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.data_dir = data_dir
        self.capsys = capsys

    def run(self, *args: str, json_out: bool = False) -> tuple[int, str, str]:
        argv = ["--data-dir", str(self.data_dir)]
        if json_out:
            argv.append("--json")
        self.capsys.readouterr()
        try:
            code = cli.main([*argv, *args])
        except SystemExit as exc:  # argparse's own usage errors
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *args: str) -> dict[str, Any]:
        code, out, err = self.run(*args, json_out=True)
        assert code == 0, err
        assert err == ""
        result: dict[str, Any] = json.loads(out)
        return result

    def refused(self, expect: int, *args: str, json_out: bool = False) -> str:
        code, out, err = self.run(*args, json_out=json_out)
        assert code == expect, (code, out, err)
        assert "Traceback" not in out + err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("pos-loyalty:"), err
        return lines[0]


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(tmp_path / "data", capsys)


def ledger_head(run: Cli) -> int:
    report = run.ok("ledger", "verify")
    assert report["ok"] is True
    return int(report["events"])


def test_init_then_ledger_verify(run: Cli) -> None:
    out = run.ok("init")
    assert Path(out["ledger"]).exists()
    assert Path(out["ledger"]).parent == run.data_dir
    assert out["terminal_id"] == "till-1"
    code, text, err = run.run("ledger", "verify")
    assert code == 0 and "ledger OK" in text and err == ""


def test_a_day_at_the_till(run: Cli, tmp_path: Path) -> None:
    run.ok("init")
    enrolled = run.ok("enrol", "--name", "Ada", "--marketing", "--at", "2025-01-01T09:00:00+00:00")
    code, customer = enrolled["card"]["code"], enrolled["customer_id"]
    assert enrolled["welcome"] == {"points": 50}
    assert enrolled["balances"]["points"]["balance"] == 50

    quote = run.ok(
        "sale", "--card", code, "--quote", "--line", "espresso:coffee:2:320", "--at", DAY1
    )
    assert quote["total"] == 640 and quote["earned"] == {"points": 6, "coffee-card": 2}
    assert ledger_head(run) == 2  # the quote wrote nothing

    sale = run.ok(
        "sale",
        "--card",
        code,
        "--receipt",
        "R-1",
        "--line",
        "espresso:coffee:2:320",
        "--line",
        "croissant:bakery:1:250",
        "--redeem",
        "points:40",
        "--at",
        DAY1,
    )
    assert sale["total_before"] == 890 and sale["total"] == 850
    assert sale["earned"] == {"points": 8, "coffee-card": 2}
    assert sale["balances"]["points"]["balance"] == 18
    assert sale["balances"]["coffee-card"]["balance"] == 2
    # The same receipt again: the first answer, nothing written.
    again = run.ok(
        "sale",
        "--card",
        code,
        "--receipt",
        "R-1",
        "--line",
        "espresso:coffee:2:320",
        "--line",
        "croissant:bakery:1:250",
        "--redeem",
        "points:40",
        "--at",
        DAY1,
    )
    assert again == sale
    assert ledger_head(run) == 3

    back = run.ok(
        "refund",
        "R-1",
        "--refund-id",
        "F-1",
        "--line",
        "espresso:1",
        "--at",
        "2025-01-03T09:00:00+00:00",
    )
    assert back["lines"] == [{"sku": "espresso", "qty": 1}]
    assert back["reversed"]["coffee-card"] == 1
    assert back["amount"] > 0

    adjusted = run.ok(
        "adjust",
        customer,
        "points",
        "25",
        "--reason",
        "goodwill",
        "--at",
        "2025-01-03T10:00:00+00:00",
    )
    assert adjusted["customer_id"] == customer

    shown = run.ok("card", "show", code, "--at", "2025-01-04T09:00:00+00:00")
    assert shown["card"]["code"] == code and shown["customer"]["name"] == "Ada"
    assert shown["balances"]["points"]["balance"] == adjusted["balances"]["points"]["balance"]

    hist = run.ok("history", customer)
    kinds = [e["kind"] for e in hist["history"]]
    assert {"customer.enrolled", "sale.committed", "refund.committed", "account.adjusted"} <= set(
        kinds
    )
    assert hist["customer"]["consents"] == {"marketing": True}

    png = tmp_path / "card.png"
    code_rc, out, err = run.run("card", "qr", code, "--png", str(png))
    assert code_rc == 0, err
    assert png.read_bytes().startswith(PNG_MAGIC)
    code_rc, out, err = run.run("card", "qr", code)
    assert code_rc == 0 and code in out

    code_rc, out, err = run.run("ledger", "verify")
    assert code_rc == 0, err

    # Human summaries (no --json) work too.
    code_rc, out, err = run.run("card", "show", code)
    assert code_rc == 0 and code in out and err == ""
    code_rc, out, err = run.run("history", customer)
    assert code_rc == 0 and "sale.committed" in out


def test_card_issue_block_replace(run: Cli) -> None:
    enrolled = run.ok("enrol", "--at", "2025-01-01T09:00:00+00:00")
    code, customer = enrolled["card"]["code"], enrolled["customer_id"]
    second = run.ok("card", "issue", customer)["card"]["code"]
    assert second != code
    replaced = run.ok("card", "replace", second, "--reason", "damaged")
    new = replaced["card"]["code"]
    assert replaced["replaced"] == second
    assert run.ok("card", "show", new)["customer"]["id"] == customer
    blocked = run.ok("card", "block", code, "--reason", "lost")
    assert blocked["card"]["status"] == "blocked"
    line = run.refused(
        1, "sale", "--card", code, "--receipt", "R-1", "--line", "espresso:coffee:1:320"
    )
    assert "card_blocked" in line


def test_refusals_exit_1_with_one_line(run: Cli) -> None:
    enrolled = run.ok("enrol", "--at", "2025-01-01T09:00:00+00:00")
    code, customer = enrolled["card"]["code"], enrolled["customer_id"]
    before = ledger_head(run)
    cases = [
        (("card", "show", "PL0000000000001"), "unknown_card"),
        (("card", "show", "4111111111111111"), "payment_card_rejected"),
        (
            (
                "sale",
                "--card",
                code,
                "--receipt",
                "R-1",
                "--line",
                "a::1:1000",
                "--redeem",
                "points:51",
            ),
            "insufficient_points",
        ),
        (
            ("sale", "--card", code, "--receipt", "R-1", "--line", "a::1:10", "--redeem", "nope:5"),
            "unknown_program",
        ),
        (
            ("sale", "--card", "4111111111111111", "--receipt", "R-1", "--line", "a::1:10"),
            "payment_card_rejected",
        ),
        (("refund", "NOPE", "--refund-id", "F-1"), "unknown_receipt"),
        (("history", "nope"), "unknown_customer"),
        (("adjust", "nope", "points", "5", "--reason", "x"), "unknown_customer"),
        (("adjust", customer, "points", "0", "--reason", "x"), "invalid_adjustment"),
        (("card", "issue", "nope"), "unknown_customer"),
    ]
    for args, error_code in cases:
        line = run.refused(1, *args)
        assert error_code in line, (args, line)
        assert "4111111111111111" not in line
    assert ledger_head(run) == before
    # With --json the refusal is also a JSON error document on stdout.
    rc, out, err = run.run("card", "show", "PL0000000000001", json_out=True)
    assert rc == 1
    assert json.loads(out)["error"]["code"] == "unknown_card"


def test_receipt_conflict_exits_1(run: Cli) -> None:
    code = run.ok("enrol", "--at", "2025-01-01T09:00:00+00:00")["card"]["code"]
    run.ok("sale", "--card", code, "--receipt", "R-1", "--line", "a::1:100", "--at", DAY1)
    line = run.refused(
        1, "sale", "--card", code, "--receipt", "R-1", "--line", "a::1:200", "--at", DAY1
    )
    assert "receipt_conflict" in line


@pytest.mark.parametrize(
    "args",
    [
        ("sale", "--line", "espresso"),
        ("sale", "--line", "espresso:coffee:1.5:320"),
        ("sale", "--line", "espresso:coffee:1:3.20"),
        ("sale", "--line", "espresso:coffee:0:320"),
        ("sale", "--line", "espresso:coffee:-1:320"),
        ("sale", "--line", "espresso:coffee:1:-320"),
        ("sale", "--line", "a::1:1", "--redeem", "points"),
        ("sale", "--line", "a::1:1", "--redeem", "points:-5"),
        ("sale", "--line", "a::1:1"),  # commit without --receipt
        ("sale", "--quote", "--line", "a::1:1", "--at", "yesterday"),
        ("sale", "--quote", "--line", "a::1:1", "--at", "2025-01-02T09:00:00"),
        ("enrol", "--at", "2025-01-02T09:00:00"),
        ("refund", "R-1", "--refund-id", "F", "--line", "a"),
        ("refund", "R-1", "--refund-id", "F", "--line", "a:0"),
        ("history", "x", "--limit", "0"),
        ("card", "qr", "not-a-card"),
    ],
    ids=lambda a: " ".join(a),
)
def test_usage_errors_exit_2_with_one_line(run: Cli, args: tuple[str, ...]) -> None:
    run.ok("init")
    run.refused(2, *args)
    assert ledger_head(run) == 0


@pytest.mark.parametrize(
    "args",
    [(), ("frobnicate",), ("sale",), ("adjust", "x", "points", "five", "--reason", "r")],
    ids=["no-command", "unknown-command", "sale-without-line", "delta-not-int"],
)
def test_argparse_errors_exit_2_without_traceback(run: Cli, args: tuple[str, ...]) -> None:
    rc, out, err = run.run(*args)
    assert rc == 2
    assert "Traceback" not in out + err
    last = err.strip().splitlines()[-1]
    assert last.startswith("pos-loyalty") and ": error: " in last, err


def test_card_qr_never_echoes_payment_card_data(run: Cli) -> None:
    rc, out, err = run.run("card", "qr", "4111111111111111")
    assert rc in (1, 2)
    assert "4111111111111111" not in out + err


def test_invalid_config_file_exits_2_naming_it(run: Cli, tmp_path: Path) -> None:
    from pos_loyalty.config import embedded_default_text

    bad = tmp_path / "broken-shop.toml"
    bad.write_text('[terminal]\nid = "till-1\n', encoding="utf-8")  # unterminated string
    line = run.refused(2, "--config", str(bad), "init")
    assert "broken-shop.toml" in line

    wrong = tmp_path / "wrong-shop.toml"
    text = embedded_default_text()
    assert "port = 8765" in text
    wrong.write_text(text.replace("port = 8765", 'port = "eighty"'), encoding="utf-8")
    line = run.refused(2, "--config", str(wrong), "init")
    assert "wrong-shop.toml" in line and "port" in line

    missing = tmp_path / "missing.toml"
    line = run.refused(2, "--config", str(missing), "init")
    assert "missing.toml" in line
    assert not (run.data_dir / "ledger.sqlite").exists()


def test_config_file_and_data_dir_override(run: Cli, tmp_path: Path) -> None:
    from pos_loyalty.config import embedded_default_text

    shop = tmp_path / "shop.toml"
    shop.write_text(embedded_default_text().replace('id = "till-1"', 'id = "till-9"', 1))
    out = run.ok("--config", str(shop), "init")
    assert out["terminal_id"] == "till-9"
    assert Path(out["ledger"]).parent == run.data_dir  # --data-dir beats the file


def test_console_script_entry_point(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "pos-loyalty"
    if not script.exists():
        pytest.skip("the console script is not installed in this interpreter's environment")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    proc = subprocess.run(
        [str(script), "--data-dir", str(tmp_path / "data"), "--json", "enrol"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["card"]["code"].startswith("PL") and out["welcome"] == {"points": 50}
    proc = subprocess.run(
        [str(script), "--data-dir", str(tmp_path / "data"), "card", "show", "PL0000000000001"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# -- from a bug hunt of the command line (2026-12-06) -------------------------------------


def test_the_agent_on_a_busy_port_is_one_line_and_touches_nothing(run: Cli) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = run.refused(1, "agent", "--demo", "--port", str(port))
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert not run.data_dir.exists()  # no ledger made, no demo customers seeded


def test_a_file_that_cannot_be_written_is_one_line(run: Cli, tmp_path: Path) -> None:
    line = run.refused(1, "card", "qr", "PL0000000000018", "--png", "/nonexistent/card.png")
    assert "/nonexistent/card.png" in line
    (tmp_path / "afile").write_text("")
    argv = ["--data-dir", str(tmp_path / "afile"), "init"]
    code = cli.main(argv)
    _, err = run.capsys.readouterr()
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_json_errors_are_json_on_stdout(run: Cli, tmp_path: Path) -> None:
    code, out, err = run.run("--config", str(tmp_path / "missing.toml"), "init", json_out=True)
    assert code == 2 and json.loads(out)["error"]["code"] == "configuration_error"
    code, out, err = run.run("history", "nobody", "--limit", "0", json_out=True)
    assert code == 2 and json.loads(out)["error"]["code"] == "usage_error"


def test_cards_keygen_never_overwrites_its_own_private_key(run: Cli, tmp_path: Path) -> None:
    same = tmp_path / "shop.pem"
    line = run.refused(1, "cards", "keygen", "--out", str(same), "--public", str(same))
    assert "both be" in line and not same.exists()
    line = run.refused(1, "cards", "keygen", "--out", str(tmp_path / "signing.pub"))
    assert "both be" in line
    half = tmp_path / "k4.pem"
    run.refused(1, "cards", "keygen", "--out", str(half), "--public", "/nonexistent/k4.pub")
    assert not half.exists()  # no half-made pair: the retry starts clean
    assert run.run("cards", "keygen", "--out", str(half))[0] == 0


def test_a_sale_sent_by_the_api_and_the_command_line_is_one_request(run: Cli) -> None:
    """The two adapters hashed different shapes: the same basket was a receipt_conflict."""
    from fastapi.testclient import TestClient

    from pos_loyalty.api import create_app
    from pos_loyalty.bootstrap import open_service
    from pos_loyalty.config import load_settings

    card = run.ok("enrol", "--name", "Ada")["card"]["code"]
    service = open_service(load_settings(None, data_dir=run.data_dir))
    try:
        body = {
            "receipt_id": "X-1",
            "card": card,
            "lines": [{"sku": "espresso", "category": "coffee", "qty": 1, "unit_price": 320}],
        }
        first = TestClient(create_app(service)).post("/v1/baskets/commit", json=body)
        assert first.status_code == 200, first.text
    finally:
        service.ledger.close()
    again = run.ok("sale", "--receipt", "X-1", "--card", card, "--line", "espresso:coffee:1:320")
    assert again == first.json()


def test_the_command_line_refuses_what_the_api_refuses(run: Cli) -> None:
    assert "email" in run.refused(2, "enrol", "--email", "not-an-email")
    assert "name" in run.refused(2, "enrol", "--name", "x" * 201)
    assert "sku" in run.refused(2, "sale", "--quote", "--line", "s" * 65 + ":c:1:100")
    assert "--wallet" in run.refused(2, "sale", "--quote", "--line", "a:b:1:100", "--wallet", "w:x")


def test_a_closed_output_pipe_is_no_traceback(tmp_path: Path) -> None:
    script = (
        f"{sys.executable} -m pos_loyalty.cli --data-dir {tmp_path / 'd'} "
        "sale --receipt BP-1 --line a:b:1:100 | true; echo ${PIPESTATUS[0]} >&2"
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "0"
