#!/usr/bin/env bash
# Start the cashier terminal on demo data (bootstraps .venv first).
# POS_LOYALTY_DATA_DIR chooses the data folder; extra arguments go to `terminal`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/pos-loyalty --data-dir "${POS_LOYALTY_DATA_DIR:-$PWD/.demo-data}" terminal --demo "$@"
