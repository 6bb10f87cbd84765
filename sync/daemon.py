"""The sync worker: rounds on an interval, backoff with jitter, one worker per ledger.

``SyncWorker`` runs in its own process (``pos-loyalty sync``) or as a thread inside the
terminal/agent (``start_thread``). Exactly one worker per ledger: an exclusive ``flock`` on
``<data_dir>/sync.lock`` (released by the kernel when the process dies, also on SIGKILL).
Everything it needs to resume is in the ledger (``acked_seq``, cursor), so a crash at any
point resumes from what is on disk.

``status()`` (online, last success, events waiting, conflicts, last error) is what
``create_app(service, status=worker.status)`` merges into ``/v1/health``; ``online()`` is
what ``Service(..., online=worker.online)`` uses for the offline redemption limits.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx

from pos_loyalty.ledger.replication import Credentials, Replica
from pos_loyalty.ledger.store import Ledger, LedgerError
from pos_loyalty.sync_status import RoundStatus, write_status

from .client import ProgramSink, RoundResult, SyncClient, SyncFailed

log = logging.getLogger("sync.daemon")

LOCK_FILE = "sync.lock"


class AlreadyRunning(Exception):
    """Another sync worker holds this ledger's lock."""


class LedgerLock:
    """An exclusive, non-blocking ``flock`` on a file in the data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # noqa: SIM115 - held for the worker's lifetime
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise AlreadyRunning(
                f"another sync worker is running for this ledger (lock {self.path})"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def backoff(attempt: int, base: float = 1.0, cap: float = 300.0) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)],
    at least ``base / 2`` so a flapping link does not spin."""
    return max(base / 2, random.uniform(0, min(cap, base * (2**attempt))))


class SyncWorker:
    def __init__(
        self,
        ledger: Ledger,
        credentials: Credentials,
        *,
        data_dir: Path,
        interval: float = 30.0,
        http: httpx.Client | None = None,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
        programs: ProgramSink | None = None,
        region_only: bool = False,
    ) -> None:
        """``programs``: where the server's program configuration is kept (fetched each
        round when given; ``pos_loyalty.server_programs.ServerPrograms``)."""
        self.replica = Replica(ledger)
        self.credentials = credentials
        self.interval = interval
        self.lock = LedgerLock(data_dir)
        self.data_dir = data_dir
        self.client = SyncClient(
            self.replica, credentials, http=http, programs=programs, region_only=region_only
        )
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._online = False
        self._last_success: datetime | None = None
        self._last_error: str | None = None
        self._failures = 0

    # -- state -----------------------------------------------------------------------------
    def online(self) -> bool:
        """Whether the last round reached the server and it is recent."""
        if not self._online or self._last_success is None:
            return False
        age = (datetime.now(UTC) - self._last_success).total_seconds()
        return age <= 2 * self.interval + 30

    def status(self) -> dict[str, Any]:
        try:
            waiting = self.replica.waiting()
            conflicts = self.replica.conflict_count()
        except Exception:  # noqa: BLE001 - health must answer even with a busy ledger
            waiting, conflicts = -1, -1
        return {
            "online": self.online(),
            "events_waiting": waiting,
            "sync": {
                "online": self.online(),
                "last_success": self._last_success.isoformat() if self._last_success else None,
                "events_waiting": waiting,
                "conflicts": conflicts,
                "last_error": self._last_error,
                "server_url": self.credentials.server_url,
                "programs": {
                    "version": self.client.programs_version,
                    "problem": self.client.programs_problem,
                },
            },
        }

    # -- running ---------------------------------------------------------------------------
    def run_once(self) -> RoundResult:
        """One round; raises SyncFailed. Callers hold the lock (``run``/``start_thread``)."""
        try:
            result = self.client.round()
        except SyncFailed as exc:
            self._online = False
            self._last_error = str(exc)
            self._record()
            raise
        self._online = True
        self._last_success = datetime.now(UTC)
        self._last_error = None
        self._record()
        return result

    def _record(self) -> None:
        """Tell an agent or terminal next to this process how the round went."""
        try:
            write_status(
                self.data_dir,
                RoundStatus(self._online, datetime.now(UTC), self._last_success, self._last_error),
            )
        except OSError as exc:  # the round itself is recorded in the ledger: carry on
            log.warning("could not write the sync status file: %s", exc)

    def run(self, *, once: bool = False, resend_from: int | None = None) -> int:
        """Hold the lock and sync until stopped (or one round with ``once``). With
        ``resend_from``, this till's events from that seq are pushed again first (the rewind
        happens under the lock, so no other worker is pushing meanwhile)."""
        self.lock.acquire()
        try:
            if resend_from is not None:
                self.client.replica.rewind(resend_from - 1)
            if once:
                self.run_once()
                return 0
            self._loop()
            return 0
        finally:
            self.lock.release()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                result = self.run_once()
                self._failures = 0
                if result.pushed or result.pulled.applied:
                    log.info(
                        "synced: pushed %d (%d new), pulled %d",
                        result.pushed,
                        result.accepted,
                        result.pulled.applied,
                    )
                wait = self.interval
            except SyncFailed as exc:
                if exc.reachable and exc.code in (
                    "terminal_revoked",
                    "invalid_credentials",
                    "credentials_replaced",  # paired again (elsewhere): this copy is dead
                ):
                    log.error("sync stopped: %s", exc)
                    self._stop.wait(self.backoff_cap)
                    continue
                wait = backoff(self._failures, self.backoff_base, self.backoff_cap)
                self._failures += 1
                log.warning("sync failed (%s); retrying in %.1f s", exc, wait)
            except LedgerError as exc:
                # Not the network: the till's own file (damaged, not a ledger). Retried
                # rarely, without a traceback, in case it is restored meanwhile.
                self._online = False
                self._last_error = str(exc)
                self._failures += 1
                wait = self.backoff_cap
                log.error("sync paused: the till's ledger cannot be used: %s", exc)
            except Exception as exc:  # noqa: BLE001 - the worker runs for months: log, back off
                wait = backoff(self._failures, self.backoff_base, self.backoff_cap)
                self._failures += 1
                self._online = False
                self._last_error = f"{type(exc).__name__}: {exc}"
                log.exception("sync round crashed; retrying in %.1f s", wait)
            self._stop.wait(wait)

    def start_thread(self) -> None:
        """Run embedded in this process (terminal/agent) as a daemon thread."""
        self.lock.acquire()

        def target() -> None:
            try:
                self._loop()
            finally:
                self.lock.release()

        self._thread = threading.Thread(target=target, name="pos-loyalty-sync", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.client.close()

    def wait_stop(self, seconds: float) -> bool:
        return self._stop.wait(seconds)
