"""``pos-loyalty terminal``: the cashier terminal (Textual) with the plugin API embedded.

The API (uvicorn) runs in a background thread over the same service and ledger, started once
the scan screen is up so the cashier never waits for it; it serves ``GET /v1/events`` from the
same event bus the terminal publishes card reads and sync status to. If the port is taken the
terminal still runs and its status bar says the API is off. Logging goes to
``<data dir>/terminal.log`` (never to the screen, never with scanned data).
"""

from __future__ import annotations

import argparse
from typing import Any

COMMANDS = ("terminal",)


def register(sub: Any) -> None:
    p = sub.add_parser("terminal", help="the cashier terminal (Textual UI + plugin API)")
    p.add_argument("--demo", action="store_true", help="create the demo customers on first run")
    p.add_argument("--port", type=int, help="plugin API port (default: from the configuration)")
    p.add_argument("--host", help="plugin API address (default: from the configuration)")
    p.add_argument("--no-api", action="store_true", help="do not serve the plugin API")


class EmbeddedApi:
    """The plugin API on an already bound socket, served by uvicorn in a daemon thread."""

    def __init__(self, service: Any, bus: Any, status: Any, sock: Any) -> None:
        self.service = service
        self.bus = bus
        self.status = status
        self.sock = sock
        self.server: Any = None
        self.thread: Any = None
        self.error: str | None = None

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def start(self) -> None:
        import threading

        self.thread = threading.Thread(target=self._run, name="plugin-api", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import logging

        try:
            import uvicorn

            from pos_loyalty.api import create_app

            app = create_app(self.service, status=self.status, bus=self.bus)
            config = uvicorn.Config(
                app, log_config=None, access_log=False, log_level="warning", lifespan="off"
            )
            self.server = uvicorn.Server(config)
            self.server.run(sockets=[self.sock])
        except BaseException as exc:  # SystemExit from uvicorn included: keep the till up
            self.error = type(exc).__name__
            logging.getLogger("pos_loyalty.terminal").error("plugin API stopped: %r", exc)

    def stop(self, timeout: float = 5.0) -> None:  # float ok: seconds
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout)
        self.sock.close()


def bind(host: str, port: int) -> Any:
    """A listening socket on host:port, or None when it cannot be had (port taken...)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        return None
    return sock


def _setup_logging(settings: Any) -> None:
    import logging

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(settings.data_dir / "terminal.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)


class EmbeddedSyncStatus:
    """The terminal's sync status provider over the embedded sync worker (or its absence)."""

    def __init__(self, embedded: Any) -> None:
        self.embedded = embedded

    def sync_status(self) -> Any:
        from datetime import datetime

        from pos_loyalty.events import SyncStatus

        raw = self.embedded.status()
        sync = raw.get("sync", {})
        last = sync.get("last_success")
        message = sync.get("last_error") or sync.get("state") or self.embedded.note
        return SyncStatus(
            online=bool(raw.get("online")),
            configured="state" not in sync,
            last_sync=datetime.fromisoformat(last) if last else None,
            message=str(message or ""),
        )


def run(args: argparse.Namespace, settings: Any) -> int:
    from pos_loyalty.bootstrap import open_service, start_embedded_sync
    from pos_loyalty.cli import UsageError
    from pos_loyalty.events import EventBus
    from pos_loyalty.ui import create_terminal_app
    from pos_loyalty.ui.readers import feed_from_settings

    port = args.port if args.port is not None else settings.api_port
    if not 0 <= port <= 65535:
        raise UsageError("--port must be between 0 and 65535")
    host = args.host or settings.api_host
    _setup_logging(settings)
    service = open_service(settings)
    try:
        notice = ""
        if args.demo:
            from pos_loyalty.demo import seed_demo

            notice = "Demo cards: " + ", ".join(seed_demo(service))
        from pos_loyalty.ledger.store import FILE_CHECK_EVERY

        service.ledger.start_file_check(every=FILE_CHECK_EVERY)  # damage stops loyalty
        bus = EventBus()
        embedded = start_embedded_sync(service)
        provider = EmbeddedSyncStatus(embedded)
        api = None
        api_note = "API off"
        if not args.no_api:
            sock = bind(host, port)
            if sock is None:
                api_note = f"API off: port {port} busy"
            else:
                api = EmbeddedApi(service, bus, embedded.status, sock)
                api_note = f"API :{api.port}"
        app = create_terminal_app(
            service, readers=feed_from_settings(settings), status=provider, bus=bus, api=api_note
        )
        app.notice = notice
        if api is not None:
            app.after_start = api.start
        try:
            app.run()
        finally:
            if api is not None:
                api.stop()
            embedded.stop()
        return int(app.return_code or 0)
    finally:
        service.ledger.close()
