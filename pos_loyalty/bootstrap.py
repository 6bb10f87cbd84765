"""Composition root helpers: settings → ledger → service (used by the CLI and tests)."""

from __future__ import annotations

from pathlib import Path

from pos_loyalty.config import Settings
from pos_loyalty.ledger.store import Ledger
from pos_loyalty.service import Service

LEDGER_FILE = "ledger.sqlite"


def ledger_path(settings: Settings) -> Path:
    return settings.data_dir / LEDGER_FILE


def open_service(settings: Settings) -> Service:
    return Service(settings, Ledger(ledger_path(settings), settings.terminal_id))
