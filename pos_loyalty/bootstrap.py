"""Composition root helpers: settings → ledger → service (+ embedded sync), for the CLI,
the terminal and tests. The only place that wires concrete classes together."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pos_loyalty.config import Settings
from pos_loyalty.ledger.store import Ledger, LedgerError
from pos_loyalty.service import Service
from pos_loyalty.sync_status import read_status

LEDGER_FILE = "ledger.sqlite"
log = logging.getLogger(__name__)


def ledger_path(settings: Settings) -> Path:
    return settings.data_dir / LEDGER_FILE


def open_service(settings: Settings) -> Service:
    """The till's service. A program configuration the central server distributed, stored
    in the data directory for the merchant this till is paired with, replaces the
    [[programs]] of the till's own file (``pos_loyalty.server_programs``)."""
    from pos_loyalty.ledger.replication import Replica
    from pos_loyalty.server_programs import FILE_NAME, load_stored

    service = Service(settings, Ledger(ledger_path(settings), settings.terminal_id))
    if (settings.data_dir / FILE_NAME).exists():
        credentials = Replica(service.ledger).credentials()
        stored = load_stored(settings, credentials.merchant_id if credentials else None)
        if stored is not None:
            service.use_programs(stored.programs, stored.version)
    return service


def _apply_programs(service: Service) -> Callable[[Any], None]:
    def apply(stored: Any) -> None:
        if service.use_programs(stored.programs, stored.version):
            log.info("now selling with program configuration v%d", stored.version)

    return apply


@dataclass
class EmbeddedSync:
    """The sync worker running inside a terminal/agent process, or why it is not."""

    status: Callable[[], dict[str, Any]]
    stop: Callable[[], None]
    note: str


def _offline_status(note: str) -> Callable[[], dict[str, Any]]:
    def status() -> dict[str, Any]:
        return {"online": False, "sync": {"online": False, "state": note}}

    return status


def _recorded_status(
    service: Service, replica: Any, server_url: str, note: str
) -> Callable[[], dict[str, Any]]:
    """Health of a till synced by another process, from what that process records in the
    ledger: online while its last successful pull is recent (``Service.recently_synced``)."""

    def status() -> dict[str, Any]:
        try:
            waiting = replica.waiting()
            conflicts = replica.conflict_count()
        except Exception:  # noqa: BLE001 - health must answer even with a busy ledger
            waiting, conflicts = -1, -1
        round_ = read_status(service.settings.data_dir)
        online = service.online()
        return {
            "online": online,
            "events_waiting": waiting,
            "sync": {
                "online": online,
                "last_success": round_.last_success.isoformat()
                if round_ and round_.last_success
                else None,
                "last_error": round_.last_error if round_ else None,
                "events_waiting": waiting,
                "conflicts": conflicts,
                "server_url": server_url,
                "state": note,
            },
        }

    return status


def start_embedded_sync(service: Service) -> EmbeddedSync:
    """Start syncing in a background thread when the config enables it and the till is paired.

    Wires the worker's ``online`` into the service (offline redemption limits) and returns
    a status provider for ``/v1/health`` and the UI. Never raises: a till works offline.
    """
    settings = service.settings
    from pos_loyalty.ledger.replication import Replica
    from pos_loyalty.server_programs import Follower, ServerPrograms
    from sync.daemon import AlreadyRunning, SyncWorker

    replica = Replica(service.ledger)
    try:
        credentials = replica.credentials()
    except LedgerError as exc:  # the till still starts: every call will say why
        note = f"sync not started: {exc}"
        return EmbeddedSync(_offline_status(note), lambda: None, note)
    if credentials is None:
        note = (
            "not paired: run `pos-loyalty pair --server URL --token T`"
            if settings.sync.enabled
            else "sync not configured"
        )
        return EmbeddedSync(_offline_status(note), lambda: None, note)

    def follow(note: str) -> EmbeddedSync:
        # Another process (``pos-loyalty sync``) syncs this ledger and stores the server's
        # program configuration: follow its file, and tell what it records in the ledger.
        assert credentials is not None
        follower = Follower(
            settings,
            _apply_programs(service),
            merchant_id=credentials.merchant_id,
            interval=min(float(settings.sync.interval_seconds), 30.0),
        )
        follower.start()
        status = _recorded_status(service, replica, credentials.server_url, note)
        return EmbeddedSync(status, follower.stop, note)

    if not settings.sync.enabled:
        # Paired, but this process is not to sync: a separate `pos-loyalty sync` does.
        return follow("paired; synced by a separate `pos-loyalty sync` process")
    programs = ServerPrograms(settings)
    programs.subscribe(_apply_programs(service))
    worker = SyncWorker(
        service.ledger,
        credentials,
        data_dir=settings.data_dir,
        interval=float(settings.sync.interval_seconds),
        programs=programs,
        region_only=settings.sync.region_only,
    )
    try:
        worker.start_thread()
    except AlreadyRunning:
        return follow("a separate `pos-loyalty sync` process syncs this ledger")
    service.online = worker.online
    return EmbeddedSync(worker.status, worker.stop, f"syncing with {credentials.server_url}")
