"""The program configuration the central server distributes, as this till keeps it.

The sync worker fetches a newer version (``sync.client``), this module checks it with the
till's own validation (``config.load_programs_text``: the same code and messages as the
``[[programs]]`` of the till's file, against the till's currency) and stores it atomically in
``<data_dir>/programs.server.toml`` (temporary file, fsync, rename, fsync of the folder):
a crash leaves the old version or the new one, never half of one. Listeners (the running
``Service``) are then told, and switch between transactions.

Precedence: a till that holds a stored server configuration for its merchant uses its
programs instead of the ``[[programs]]`` in its own file; ``[guards]`` / ``[nudges]`` come
from the server's configuration when it has them, else from the till's file. Everything
else (terminal id, store, readers, ports, sync) always stays local. Deleting the stored file
(with sync stopped) goes back to the till's own programs until the next fetch.

The stored file is the server's text after a short header of our own keys::

    # Program configuration from the central server. Replaced by `pos-loyalty sync`.
    server_version = 7
    server_merchant = "acme"
    fetched_at = "2026-11-23T19:00:00+00:00"

    [[programs]]
    ...

No third-party import here: the sync worker (``sync``) uses it too.
"""

from __future__ import annotations

import logging
import os
import threading
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pos_loyalty.config import ConfigError, Settings, load_programs_text
from pos_loyalty.domain.programs import ProgramSet

log = logging.getLogger(__name__)

FILE_NAME = "programs.server.toml"
_HEADER_KEYS = ("server_version", "server_merchant", "fetched_at")


@dataclass(frozen=True)
class StoredPrograms:
    version: int
    merchant_id: str
    fetched_at: str
    programs: ProgramSet


def _toml_string(text: str) -> str:
    """A TOML basic string (merchant ids are plain ids; this escapes anyway)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped) + '"'


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ServerPrograms:
    """This till's stored copy of its merchant's program configuration. Thread-safe."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = settings.data_dir / FILE_NAME
        self._lock = threading.Lock()
        self._listeners: list[Callable[[StoredPrograms], None]] = []

    def subscribe(self, listener: Callable[[StoredPrograms], None]) -> None:
        """Call ``listener`` with each newly accepted version (from the accepting thread)."""
        with self._lock:
            self._listeners.append(listener)

    def _build(self, text: str, file: str) -> ProgramSet:
        return load_programs_text(
            text, file, currency=self.settings.currency, defaults=self.settings.programs
        )

    def load(self) -> StoredPrograms | None:
        """The stored configuration, checked again; None when there is none. A stored file
        that no longer passes (edited by hand, a damaged disk) raises ConfigError."""
        file = str(self.path)
        try:
            text = self.path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(file, "", f"cannot read the file: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(file, "", "is not UTF-8 text") from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(file, "", f"invalid TOML: {exc}") from None
        version, merchant = raw.get("server_version"), raw.get("server_merchant")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ConfigError(file, "server_version", "must be a positive integer")
        if not isinstance(merchant, str) or not merchant:
            raise ConfigError(file, "server_merchant", "must be the merchant id")
        fetched_at = raw.get("fetched_at")
        body = text.split("\n", len(_HEADER_KEYS) + 1)[-1]
        programs = self._build(body, file)
        return StoredPrograms(
            version, merchant, fetched_at if isinstance(fetched_at, str) else "", programs
        )

    def have(self, merchant_id: str) -> int:
        """The version stored for ``merchant_id`` (0: none, another merchant's, unusable):
        what the sync worker tells the server it has."""
        try:
            stored = self.load()
        except ConfigError as exc:
            log.error("stored server program configuration is unusable (%s): fetching again", exc)
            return 0
        if stored is None or stored.merchant_id != merchant_id:
            return 0
        return stored.version

    def accept(self, merchant_id: str, version: int, text: str) -> StoredPrograms | None:
        """Check a configuration the server sent and store it; tell the listeners.

        Raises ConfigError (nothing stored, nothing changes) when it does not pass the
        till's validation. A version at or below the stored one (same merchant) is ignored
        (None)."""
        if version < 1:
            raise ConfigError(f"server program configuration v{version}", "version", "must be >= 1")
        programs = self._build(text, f"server program configuration v{version}")
        with self._lock:
            if version <= self.have(merchant_id):
                return None
            fetched_at = datetime.now(UTC).isoformat(timespec="seconds")
            header = (
                "# Program configuration from the central server. Replaced by `pos-loyalty "
                "sync`; do not edit.\n"
                f"server_version = {version}\n"
                f"server_merchant = {_toml_string(merchant_id)}\n"
                f'fetched_at = "{fetched_at}"\n'
            )
            _write_atomically(self.path, (header + text).encode("utf-8"))
            stored = StoredPrograms(version, merchant_id, fetched_at, programs)
            listeners = list(self._listeners)
        log.info("program configuration v%d of %s stored in %s", version, merchant_id, self.path)
        for listener in listeners:
            listener(stored)
        return stored


def load_stored(settings: Settings, merchant_id: str | None) -> StoredPrograms | None:
    """What a starting till uses: the stored server configuration when there is a usable
    one for ``merchant_id`` (None: not paired, any merchant's). Never raises: an unusable
    stored file is logged and the till's own programs are used until the next fetch."""
    try:
        stored = ServerPrograms(settings).load()
    except ConfigError as exc:
        log.error("ignoring the stored server program configuration: %s", exc)
        return None
    if stored is not None and merchant_id is not None and stored.merchant_id != merchant_id:
        log.warning(
            "ignoring the stored program configuration of merchant %s: this till is paired with %s",
            stored.merchant_id,
            merchant_id,
        )
        return None
    return stored


class Follower:
    """Polls the stored file for a change made by another process (a separate
    ``pos-loyalty sync``) and hands each newer version to ``apply``. A daemon thread."""

    def __init__(
        self,
        settings: Settings,
        apply: Callable[[StoredPrograms], None],
        *,
        merchant_id: str | None,
        interval: float,
    ) -> None:
        self.settings = settings
        self.apply = apply
        self.merchant_id = merchant_id
        self.interval = interval
        self.path = settings.data_dir / FILE_NAME
        self._seen = self._stat()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pos-loyalty-programs", daemon=True)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def check(self) -> bool:
        """One look; True when a changed file was loaded and handed on."""
        seen = self._stat()
        if seen is None or seen == self._seen:
            return False
        self._seen = seen
        stored = load_stored(self.settings, self.merchant_id)
        if stored is None:
            return False
        self.apply(stored)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the till keeps selling with what it has
                log.exception("checking the stored program configuration failed")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
