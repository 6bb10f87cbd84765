"""Crash test: a writer process killed with SIGKILL at random moments loses and doubles nothing.

``crash_writer.py`` commits sales in a loop and prints ``ok R-n`` after each commit returned.
The test kills it (SIGKILL) at a random moment — mostly 20–200 ms after it is ready (longer
when commits are slow on a loaded machine), sometimes while it is still starting and opening
the ledger — and starts it again from
the receipt after the last acknowledged one, until at least 200 commits have been acknowledged.
Then every acknowledged receipt is in the ledger exactly once, ``verify`` passes and the
customer's points are the sum of what the committed sales earned.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from pos_loyalty.bootstrap import ledger_path, open_service
from pos_loyalty.config import load_settings
from pos_loyalty.ledger.verify import verify
from pos_loyalty.service import Profile

WRITER = Path(__file__).with_name("crash_writer.py")
ROOT = Path(__file__).resolve().parents[2]
TARGET = 200
WELCOME = 50
BUDGET_SECONDS = 240  # a guard for a badly overloaded machine; ~10 s on an idle one


MIN_KILLED_RUNS = 6


@dataclass
class Pace:
    """How fast this machine starts a writer and commits, to aim the kills (adapts to load)."""

    ready_seconds: float = 0.5
    commit_seconds: float = 0.005

    def kill_delay(self, rng: random.Random, early: bool) -> float:
        if early:  # while it imports, opens the ledger or runs the migration check
            return rng.uniform(0.020, max(0.200, 1.2 * self.ready_seconds))
        # 20–200 ms into the commit loop; longer on a slow (loaded) machine, so that a run
        # still covers a dozen commits on average
        return rng.uniform(0.020, max(0.200, 25 * self.commit_seconds))


def run_writer(
    data_dir: Path, card: str, start: int, rng: random.Random, pace: Pace
) -> tuple[list[str], str, int | None]:
    """One writer run, killed at a random moment: its complete output lines and stderr."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    spawned = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(data_dir), card, str(start)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        early = rng.random() < 0.2
        if not early:
            first = proc.stdout.readline()  # blocks until the ledger is open
            if first != b"ready\n":
                proc.kill()
                proc.wait()
                pytest.fail(f"writer did not start: {first!r} {proc.stderr.read().decode()}")
            pace.ready_seconds = time.monotonic() - spawned
        delay = pace.kill_delay(rng, early)
        time.sleep(delay)
        exited_by_itself = proc.poll()
        proc.kill()  # SIGKILL
        proc.wait(timeout=30)
        out = proc.stdout.read()
        err = proc.stderr.read().decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    text = out.decode(errors="replace")
    # only complete lines count: a line cut by the kill was not received
    lines = text.split("\n")[:-1]
    if not early:
        lines.insert(0, "ready")
        commits = sum(1 for line in lines if line.startswith(("ok ", "replay ")))
        pace.commit_seconds = delay / max(commits, 1)
    return lines, err, exited_by_itself


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_doubles_nothing(tmp_path: Path) -> None:
    settings = replace(load_settings(), data_dir=tmp_path)
    service = open_service(settings)
    enrolled = service.enrol(Profile(name="Crash Test"))
    card, customer_id = enrolled["card"]["code"], enrolled["customer_id"]
    service.ledger.close()

    rng = random.Random(int(os.environ.get("CRASH_SEED", "20261122")))
    acked: dict[str, int] = {}  # receipt id -> points earned, as the writer was answered
    next_n = 0
    runs = 0
    pace = Pace()
    started = time.monotonic()
    # Keep killing until enough commits were acknowledged AND enough runs were killed: a
    # fast machine acknowledges 200 commits in one or two runs otherwise.
    while len(acked) < TARGET or runs < MIN_KILLED_RUNS:
        assert time.monotonic() - started < BUDGET_SECONDS, (
            f"only {len(acked)} commits acknowledged in {runs} runs"
        )
        lines, err, exited = run_writer(tmp_path, card, next_n, rng, pace)
        runs += 1
        assert exited is None, f"the writer exited by itself ({exited}): {err}"
        assert "Traceback" not in err, err
        for line in lines:
            if line == "ready":
                continue
            word, receipt_id, points = line.split()
            if word == "replay":
                # the last acknowledged receipt, committed again: the first answer again
                assert acked[receipt_id] == int(points)
                continue
            assert word == "ok", line
            assert receipt_id not in acked, f"{receipt_id} acknowledged twice as new"
            acked[receipt_id] = int(points)
        if acked:
            next_n = max(int(r.split("-")[1]) for r in acked) + 1

    path = ledger_path(settings)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        counts = dict(
            conn.execute("SELECT key, COUNT(*) FROM events WHERE kind = 4 GROUP BY key").fetchall()
        )
    finally:
        conn.close()
    # every acknowledged commit is there, once; nothing is doubled
    assert set(acked) <= set(counts)
    assert all(n == 1 for n in counts.values()), {k: n for k, n in counts.items() if n != 1}
    # the only commits not acknowledged are ones in flight at a kill: at most one per run, and
    # receipt numbers have no holes
    numbers = sorted(int(k.split("-")[1]) for k in counts)
    assert numbers == list(range(len(numbers)))
    assert len(counts) - len(acked) <= runs
    for receipt_id, earned_points in acked.items():
        assert counts[receipt_id] == 1
        assert earned_points >= 1

    service = open_service(settings)
    try:
        with service.ledger.reader() as tx:  # stored payloads, decoded (codec)
            payloads = [
                json.loads(tx.payload_text(p))
                for (p,) in tx.raw.execute("SELECT payload FROM events WHERE kind = 4").fetchall()
            ]
        report = verify(service.ledger)
        assert report.ok, [str(p) for p in report.problems]
        earned = sum(p["d"]["earned"].get("points", 0) for p in payloads)
        assert earned >= sum(acked.values())
        balance = service.lookup(card)["balances"]["points"]["balance"]
        assert balance == WELCOME + earned
        history = service.customer(customer_id, limit=1000)
        assert sum(1 for ev in history["history"] if ev["kind"] == "sale.committed") == len(counts)
    finally:
        service.ledger.close()
