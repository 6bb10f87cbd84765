"""``pos-loyalty server --workers N``: N processes serving one port.

One process runs the Python of every request (the hash checks and the fold of an ingest)
under one interpreter lock, so it uses one core however many tills push at once. With N
worker processes the operating system hands each new connection to one of them and N cores
work. uvicorn's own supervisor starts the workers (each builds its app with ``worker_app``,
from the options the parent puts in ``WORKER_ENV``), restarts one that dies and stops them
all on SIGINT/SIGTERM.

The workers share nothing but the database, which already orders what must be ordered: a
till's batches by its ``terminals`` row lock, the merchant's server sequence by its
``merchants`` row, the bootstrap snapshot a merchant's fold is saved by one process at a
time (``snapshots.save``). What each process keeps for itself: the rate limit buckets (a
client may get up to N times the configured rate, one bucket per worker it reaches), the
cached snapshot folds (each worker folds from the saved one; the parent keeps that one warm)
and the "last seen" throttle. PostgreSQL only: SQLite takes one writer at a time.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import threading
import time

from starlette.types import ASGIApp

from .app import create_server_app
from .store import ServerStore

WORKER_ENV = "POS_LOYALTY_SERVER_WORKER"
MAX_WORKERS = 64
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def worker_options(db_url: str, max_body_bytes: int) -> str:
    """What a worker needs to build its app, for ``WORKER_ENV`` (the environment is how
    uvicorn's spawned workers inherit it; the URL may hold a password, and a process's
    environment is readable only by its own user)."""
    return json.dumps({"db": db_url, "max_body": max_body_bytes, "parent": os.getpid()})


def worker_app() -> ASGIApp:
    """The app of one worker process (a uvicorn factory: ``sync.server.workers:worker_app``)."""
    options = json.loads(os.environ[WORKER_ENV])
    # A spawned process starts without the parent's logging set-up: the same one here.
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    store = ServerStore(options["db"])
    app = create_server_app(store, max_body_bytes=int(options["max_body"]))
    _stop_with_parent(int(options["parent"]))
    gc.freeze()  # as the single-process server does (``commands.sync._serve``)
    return app


def _stop_with_parent(parent: int, every: float = 1.0) -> None:
    """Stop this worker (SIGTERM: uvicorn's graceful shutdown) when its parent is gone, so
    a supervisor killed with SIGKILL leaves no worker holding the port. (systemd's
    default ``KillMode=control-group`` would stop them too; a shell or a test does not.)"""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
