#!/usr/bin/env bash
# Idempotent bootstrap: system packages (when root), .venv, editable install with dev extras.
# Safe to run on every invocation: a stamp keyed on pyproject.toml skips pip when nothing changed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# --- system packages (libzbar0 for pyzbar; postgresql for the sync tests) -------------------
SYSTEM_PACKAGES=(libzbar0 postgresql ghostscript tmux)
if command -v dpkg >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    missing=()
    for pkg in "${SYSTEM_PACKAGES[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        if [[ $(id -u) -eq 0 ]]; then
            say "installing ${missing[*]} (apt-get)"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq >/dev/null || die "apt-get update failed"
            apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
                || die "apt-get install ${missing[*]} failed"
        else
            say "warning: not root, cannot install ${missing[*]}; related tests may be skipped"
        fi
    fi
fi

# --- virtualenv ------------------------------------------------------------------------------
if [[ ! -x .venv/bin/python ]]; then
    if command -v python3.11 >/dev/null 2>&1; then
        PY=python3.11
    elif command -v python3 >/dev/null 2>&1; then
        PY=python3
    else
        die "python3.11 (or python3 >= 3.11) not found on PATH"
    fi
    "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$PY is $("$PY" -V 2>&1); pos-loyalty needs Python >= 3.11"
    say "creating .venv with $("$PY" -V 2>&1)"
    "$PY" -m venv .venv || die "could not create .venv (is the venv module installed?)"
fi
.venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die ".venv has $(.venv/bin/python -V 2>&1); delete .venv and rerun with Python >= 3.11"

# --- project install, skipped when pyproject.toml is unchanged ---------------------------------
hash=$(.venv/bin/python -c 'import hashlib,sys; print(hashlib.sha256(open("pyproject.toml","rb").read()).hexdigest())')
stamp=".venv/.installed-$hash"
if [[ ! -f $stamp ]]; then
    say "installing pos-loyalty[dev] into .venv"
    log=$(mktemp)
    if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "pip install -e '.[dev]' failed (output above)"
    fi
    rm -f "$log" .venv/.installed-*
    touch "$stamp"
fi
