"""The real ``pos-loyalty agent`` process: starts, serves the plugin API, stops cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from pos_loyalty.demo import demo_codes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_agent(
    data_dir: Path, *agent_args: str, program: Sequence[str] = ("-m", "pos_loyalty.cli")
) -> tuple[subprocess.Popen[str], str]:
    """``pos-loyalty agent`` (run as ``python <program>``) on a free port, its output piped,
    once its health answers (whatever it says): the process and the API's base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, *program, "--data-dir", str(data_dir), "agent"]
        + [*agent_args, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{base}/v1/health", timeout=1)
            return proc, base
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                out, _ = proc.communicate(timeout=20)
                raise AssertionError(f"agent did not come up in 30 s: {out}") from None
            time.sleep(0.1)


def test_agent_serves_plugin_api_and_stops(tmp_path: Path) -> None:
    proc, base = start_agent(tmp_path, "--demo")
    try:
        health = httpx.get(f"{base}/v1/health").json()
        assert health["terminal_id"] == "till-1"
        code = demo_codes("PL")[0]
        card = httpx.get(f"{base}/v1/cards/{code}").json()
        assert card["balances"]["points"]["balance"] == 50
        sale = {
            "receipt_id": "R-1",
            "card": code,
            "lines": [{"sku": "espresso", "category": "coffee", "qty": 1, "unit_price": 320}],
        }
        committed = httpx.post(f"{base}/v1/baskets/commit", json=sale).json()
        assert committed["balances"]["points"]["balance"] == 53
        assert "/v1/baskets/commit" in httpx.get(f"{base}/openapi.json").json()["paths"]
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert code in out  # the demo card codes are printed for the cashier
    # The agent's output never carries what was scanned beyond the demo banner.
    assert out.count(code) == 1
    cmd = [sys.executable, "-m", "pos_loyalty.cli", "--data-dir", str(tmp_path)]
    verify = subprocess.run([*cmd, "ledger", "verify"], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stderr
