#!/usr/bin/env bash
# The whole gate, in order, stopping at the first failure. Extra arguments go to pytest.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh

BIN=.venv/bin
stage() { printf '\n==> %s\n' "$*"; }

stage "ruff check"
"$BIN/ruff" check .

stage "ruff format --check"
"$BIN/ruff" format --check .

stage "mypy"
"$BIN/mypy"

stage "lint-imports"
"$BIN/lint-imports"

stage "pytest"
status=0
"$BIN/python" -m pytest "$@" || status=$?
if [[ $status -eq 5 ]]; then
    echo "test: error: pytest collected no tests (exit 5); the gate requires tests to run" >&2
    exit 1
fi
exit "$status"
