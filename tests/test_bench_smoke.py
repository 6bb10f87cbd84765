"""The bench scripts still run: each one at a tiny size, in a subprocess.

Not a benchmark and no timing assertion: exit status 0 and the figure labels in the output,
so a change in the service or the ledger cannot silently break ``bench/``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run_bench(name: str, *args: str, cwd: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCH / name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.parametrize(
    ("name", "args", "labels"),
    [
        (
            "commit_latency.py",
            ("--n", "5"),
            ("commit median:", "baseline median:", "ratio:", "commit p99:", "quote median:"),
        ),
        (
            "quote_latency.py",
            ("--n", "5"),
            ("engine quote median:", "service quote median:", "baseline median:", "ratio:"),
        ),
        (
            "ledger_size.py",
            ("--sales", "20", "--customers", "3"),
            ("ledger bytes/event:", "baseline bytes/event:", "ratio:", "events"),
        ),
    ],
)
def test_bench_script_runs(name: str, args: tuple[str, ...], labels: tuple[str, ...]) -> None:
    out = run_bench(name, *args, cwd=BENCH.parent)
    for label in labels:
        assert label in out, f"{label!r} missing from {name} output:\n{out}"


def test_lookup_bench_builds_a_consistent_ledger(tmp_path: Path) -> None:
    db = tmp_path / "lookup.sqlite"
    args = ("--customers", "200", "--events", "2000", "--lookups", "50", "--db", str(db))
    out = run_bench("lookup_latency.py", *args, "--verify", cwd=tmp_path)
    for label in ("build:", "verify: ok", "lookup median:", "lookup p99:", "baseline median:"):
        assert label in out, f"{label!r} missing from lookup_latency.py output:\n{out}"
    again = run_bench("lookup_latency.py", *args, cwd=tmp_path)  # the cached file is reused
    assert "build: cached" in again


def test_bootstrap_bench_runs(tmp_path: Path) -> None:
    """A new till loads a snapshot of a few customers from a SQLite server (the PostgreSQL
    run at 100,000 customers is the benchmark itself)."""
    args = ("--customers", "30", "--page", "7", "--sqlite", "--verify")
    out = run_bench("bootstrap_bench.py", *args, cwd=tmp_path)
    for label in ("bootstrap cold:", "bootstrap warm:", "verify after bootstrap: ok"):
        assert label in out, f"{label!r} missing from bootstrap_bench.py output:\n{out}"
