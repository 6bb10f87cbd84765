"""The UI stays out of headless modules; the terminal command loads it only when run."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    ["pos_loyalty.events", "pos_loyalty.sse", "pos_loyalty.api", "pos_loyalty.commands.terminal"],
)
def test_headless_modules_do_not_load_the_ui(module: str) -> None:
    code = (
        "import sys, importlib; importlib.import_module(sys.argv[1]); "
        "bad = [m for m in ('textual', 'pos_loyalty.ui') if m in sys.modules]; "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code, module], capture_output=True, text=True)
    assert proc.returncode == 0, f"{module} imported {proc.stdout.strip()} {proc.stderr}"


def test_cli_parser_knows_the_terminal_command_without_loading_the_ui() -> None:
    code = (
        "import sys; from pos_loyalty.cli import build_parser; "
        "a = build_parser().parse_args(['terminal', '--demo', '--port', '9000', '--no-api']); "
        "assert a.command == 'terminal' and a.demo and a.port == 9000 and a.no_api; "
        "sys.exit(1 if 'textual' in sys.modules else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
