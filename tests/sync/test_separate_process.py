"""An agent next to a separate ``pos-loyalty sync`` process (the systemd unit of
docs/sync.md), as real processes: the agent knows whether the server confirms redemptions
from the worker's status file, applies the offline limits when it does not, and follows the
program configuration the worker stores. Each case was a bug: with ``[sync] enabled = false``
(the default) the agent took the paired till for a stand-alone one and let a card redeem
four times its daily limit; with ``enabled = true`` it stayed offline for ever."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pos_loyalty.sync_status import read_status

EXAMPLE = (Path(__file__).resolve().parents[2] / "config.example.toml").read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def till_config(path: Path, terminal: str, *, api_port: int, enabled: bool, url: str) -> Path:
    text = re.sub(r'(?m)^id = "till-1"$', f'id = "{terminal}"', EXAMPLE, count=1)
    text = re.sub(r'(?m)^data_dir = ""$', f'data_dir = "{path.parent / terminal}"', text, count=1)
    text = re.sub(r"(?m)^port = 8765$", f"port = {api_port}", text, count=1)
    text = re.sub(r"(?m)^interval_seconds = 30$", "interval_seconds = 2", text, count=1)
    if enabled:
        text = re.sub(r"(?m)^enabled = false$", "enabled = true", text, count=1)
        text = re.sub(r'(?m)^server_url = ""$', f'server_url = "{url}"', text, count=1)
    path.write_text(text)
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pos_loyalty.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


class Processes:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pos_loyalty.cli", *args],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.running.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    for proc in procs.running:
        procs.stop(proc)


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code in (200, 503):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


def wait_for(check: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def chain(tmp: Path, procs: Processes, *, enabled: bool) -> tuple[Path, Path, str, str]:
    """A server, two paired tills; a customer with 20,000 points known to both. Returns
    the server's data folder, till B's config, the card and till B's API base URL."""
    port = free_port()
    srv = tmp / "srv"
    procs.start("server", "--data-dir", str(srv), "server", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/v1/sync/health")
    configs = {}
    for till in ("till-a", "till-b"):
        token = cli(
            "--data-dir", str(srv), "server", "token", "create", "--terminal", till,
            "--merchant", "m", "--store", "s",
        )  # fmt: skip
        assert token.returncode == 0, token.stderr
        configs[till] = till_config(
            tmp / f"{till}.toml", till, api_port=free_port(), enabled=enabled, url=url
        )
        paired = cli("--config", str(configs[till]), "pair", "--server", url, "--token",
                     token.stdout.strip())  # fmt: skip
        assert paired.returncode == 0, paired.stderr
    a = str(configs["till-a"])
    enrolled = json.loads(cli("--config", a, "--json", "enrol", "--name", "Eve").stdout)
    card, customer = enrolled["card"]["code"], enrolled["customer_id"]
    assert (
        cli("--config", a, "adjust", customer, "points", "20000", "--reason", "t").returncode == 0
    )
    assert cli("--config", a, "sync", "--once").returncode == 0
    assert cli("--config", str(configs["till-b"]), "sync", "--once").returncode == 0
    api = re.search(r"(?m)^port = (\d+)$", configs["till-b"].read_text())
    assert api is not None
    return srv, configs["till-b"], card, f"http://127.0.0.1:{api.group(1)}"


def redeem(api: str, receipt: str, card: str, points: int) -> httpx.Response:
    return httpx.post(
        f"{api}/v1/baskets/commit",
        timeout=10,
        json={
            "receipt_id": receipt,
            "card": card,
            "lines": [{"sku": "cake", "category": "bakery", "qty": 1, "unit_price": 30000}],
            "redeem": [{"program": "points", "points": points}],
        },
    )


def test_the_offline_limit_holds_next_to_a_separate_sync_process(
    tmp_path: Path, processes: Processes
) -> None:
    """``enabled = false`` (this process does not sync), paired, the server down: the
    separate worker's failed round makes the agent offline: 20,000 points (four times the
    card's daily limit) are refused, 5,000 are not."""
    _, till_b, card, api = chain(tmp_path, processes, enabled=False)
    processes.stop(processes.running[0])  # the central server is gone
    processes.start("sync-b", "--config", str(till_b), "sync")
    data_b = till_b.parent / "till-b"
    wait_for(lambda: (s := read_status(data_b)) is not None and not s.online)
    processes.start("agent-b", "--config", str(till_b), "agent")
    wait_http(f"{api}/v1/health")
    health = httpx.get(f"{api}/v1/health").json()
    assert health["online"] is False and health["sync"]["last_error"]
    over = redeem(api, "R-B1", card, 20000)
    assert over.status_code == 422 and over.json()["error"]["code"] == "offline_limit_exceeded"
    assert redeem(api, "R-B2", card, 5000).status_code == 200


def test_an_agent_is_online_while_a_separate_sync_process_reaches_the_server(
    tmp_path: Path, processes: Processes
) -> None:
    """``enabled = true`` and the worker already running: the agent cannot take the lock,
    follows the worker's status and is online; a redemption over the offline limit goes
    through."""
    _, till_b, card, api = chain(tmp_path, processes, enabled=True)
    processes.start("sync-b", "--config", str(till_b), "sync")
    data_b = till_b.parent / "till-b"
    wait_for(lambda: (s := read_status(data_b)) is not None and s.online)
    processes.start("agent-b", "--config", str(till_b), "agent")
    wait_http(f"{api}/v1/health")
    health = httpx.get(f"{api}/v1/health").json()
    assert health["online"] is True, health
    assert health["sync"]["events_waiting"] == 0
    assert redeem(api, "R-B2", card, 6000).status_code == 200


def test_an_agent_follows_the_programs_a_separate_sync_process_stores(
    tmp_path: Path, processes: Processes
) -> None:
    srv, till_b, _, api = chain(tmp_path, processes, enabled=False)
    processes.start("agent-b", "--config", str(till_b), "agent")
    wait_http(f"{api}/v1/health")
    processes.start("sync-b", "--config", str(till_b), "sync")
    programs = tmp_path / "programs.toml"
    programs.write_text(
        '[[programs]]\nid = "points"\nkind = "points"\nlabel = "Points"\n'
        "points_per_unit = 2\nunit = 100\npoint_value = 1\n"
    )
    done = cli("--data-dir", str(srv), "server", "programs", "set", "--merchant", "m",
               "--file", str(programs))  # fmt: skip
    assert done.returncode == 0, done.stderr

    def switched() -> bool:
        return bool(httpx.get(f"{api}/v1/health").json()["programs"]["version"] == 1)

    wait_for(switched, timeout=45)
    assert httpx.get(f"{api}/v1/health").json()["programs"] == {"version": 1, "source": "server"}
