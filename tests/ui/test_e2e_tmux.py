"""End to end: the real ``pos-loyalty terminal`` in tmux, driven as a cashier would.

Types a demo card code and a sale with ``tmux send-keys``, reads the screen with
``capture-pane -p``, and checks the balances shown against the ledger (through the CLI).
Also checks the embedded plugin API answers while the terminal runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pos_loyalty.cli import main as cli_main

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(
    TMUX is None, reason="tmux is not installed (apt-get install tmux) - end-to-end test skipped"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Tmux:
    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, *args: str) -> str:
        assert TMUX is not None
        out = subprocess.run([TMUX, *args], capture_output=True, text=True, timeout=10)
        return out.stdout

    def keys(self, *keys: str, literal: bool = False) -> None:
        self.run("send-keys", "-t", self.name, *(["-l"] if literal else []), *keys)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.name)

    def wait_for(self, text: str, timeout: float = 15.0) -> str:  # float ok: seconds
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.05)
        raise AssertionError(f"{text!r} never appeared; the screen was:\n{screen}")


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[tuple[Tmux, Path, int]]:
    port = free_port()
    name = f"pl-e2e-{uuid.uuid4().hex[:8]}"
    data = tmp_path / "till"
    command = f"{sys.executable} -m pos_loyalty.cli --data-dir {data} terminal --demo --port {port}"
    env = {**os.environ, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TERM": "xterm-256color"}
    assert TMUX is not None
    subprocess.run(
        [TMUX, "-u", "new-session", "-d", "-s", name, "-x", "120", "-y", "40", command],
        check=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=10,
    )
    tmux = Tmux(name)
    try:
        yield tmux, data, port
    finally:
        tmux.run("kill-session", "-t", name)


def ledger_view(data: Path, code: str, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()
    assert cli_main(["--data-dir", str(data), "--json", "card", "show", code]) == 0
    out: dict[str, object] = json.loads(capsys.readouterr().out)
    return out


def test_cashier_sale_in_the_real_terminal(
    terminal: tuple[Tmux, Path, int], capsys: pytest.CaptureFixture[str]
) -> None:
    tmux, data, port = terminal
    tmux.wait_for("SCAN THE LOYALTY CARD")
    screen = tmux.wait_for("Demo cards:")
    codes = re.search(r"Demo cards: (\S+), (\S+), (\S+)", screen)
    assert codes, screen
    code = codes.group(1)
    assert "OFFLINE (sync not configured)" in screen
    tmux.wait_for(f"API :{port}")
    health = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5).json()
    assert health["terminal_id"] == "till-1"

    tmux.keys(code, literal=True)
    tmux.keys("Enter")
    screen = tmux.wait_for("Ada Demo")
    assert "Coffee card: ○○○○○○○○○ 0/9" in screen

    tmux.keys("F4")
    tmux.wait_for("Sale for Ada Demo")
    tmux.keys("espresso coffee 3.20", literal=True)
    tmux.keys("Enter")
    tmux.keys("2x croissant bakery 2.50", literal=True)
    tmux.keys("Enter")
    tmux.wait_for("TO PAY 8.20")
    tmux.keys("F9")
    screen = tmux.wait_for("Sale saved")

    shown_points = re.search(r"Points: (-?\d+) \(worth", screen)
    shown_stamps = re.search(r"Coffee card: [●○]+ (\d+)/(\d+)", screen)
    assert shown_points and shown_stamps, screen
    view = ledger_view(data, code, capsys)
    balances = view["balances"]
    assert isinstance(balances, dict)
    assert int(shown_points.group(1)) == balances["points"]["balance"]
    assert int(shown_stamps.group(1)) == balances["coffee-card"]["balance"]
    assert balances["coffee-card"]["balance"] == 1

    tmux.keys("Enter")
    tmux.wait_for("SCAN THE LOYALTY CARD")
    tmux.keys("C-q")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "pos_loyalty.cli" in tmux.run(
        "list-panes", "-a", "-F", "#{pane_start_command}"
    ):
        time.sleep(0.1)
