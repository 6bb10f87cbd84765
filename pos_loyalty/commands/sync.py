"""``pos-loyalty sync``, ``pos-loyalty server`` and ``pos-loyalty pair``.

Standard library only at module level (see ``pos_loyalty.commands``); the sync stack is
imported inside ``run``.

- ``sync [--once]``: the till's sync worker (one per ledger, enforced by a lock). ``--once``
  runs one round and exits 1 when the server cannot be reached or refuses.
- ``server [--db URL] [--host H] [--port N]``: the central server (SQLite file in the data
  directory by default; ``postgresql+psycopg://...`` in production).
- ``server token create --terminal ID [--merchant M --store S]``: a one-time pairing token
  (ids follow a till's ``terminal.id`` rule; any other is a usage error, exit 2).
- ``server token revoke --terminal ID``: refuse a till from now on.
- ``server stores set-region STORE REGION [--merchant M]`` (or ``--clear``): a store's
  region, for its region-only tills (``token create --region`` sets it too).
- ``server conflicts`` / ``server overdrafts``: what an operator must look at.
- ``server terminals [--merchant M]``: every till, its status, the chain the server holds,
  when it was last heard from, and the program configuration version it runs (or refused).
- ``server programs set --merchant M --file F`` / ``server programs show --merchant M``: the
  program configuration the server distributes to the merchant's tills, with its version.
- ``pair --server URL --token TOKEN [--no-bootstrap]``: exchange a pairing token for this
  till's credentials; an empty ledger then loads the server's snapshot (``sync.bootstrap``,
  a progress bar on stderr unless --json or not a terminal).
- ``sync --bootstrap``: load the snapshot into an empty ledger, or finish an interrupted load.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from pos_loyalty.listen import cannot_listen

COMMANDS = ("sync", "server", "pair")

SERVER_DB_ENV = "POS_LOYALTY_SERVER_DB"


def register(sub: Any) -> None:
    p = sub.add_parser("sync", help="sync this till's ledger with the central server")
    p.add_argument("--once", action="store_true", help="one round, then exit (1 if it failed)")
    p.add_argument("--server", help="override the paired server URL")
    p.add_argument(
        "--bootstrap",
        action="store_true",
        help="load the server's snapshot into this empty ledger (or finish an interrupted "
        "load), then exit",
    )
    p.add_argument(
        "--resend-from",
        type=int,
        metavar="SEQ",
        help="push this till's events again from SEQ (the server answers them as duplicates "
        "and mends its copy of any that `server verify` found damaged)",
    )

    p = sub.add_parser("server", help="the central server, and its administration")
    p.add_argument("--db", help=f"database URL (default: env {SERVER_DB_ENV} or a SQLite file)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8740)
    p.add_argument("--max-body", type=int, default=8 * 1024 * 1024, help="request size limit")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="processes serving the port (default 1; above 1 needs PostgreSQL): one core each",
    )
    p.add_argument(
        "--snapshot-every",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="bring the bootstrap snapshots up to date this often (default 300; 0: only at start)",
    )
    server_sub = p.add_subparsers(dest="server_command", metavar="ACTION")
    t = server_sub.add_parser("token", help="pairing tokens and revocation")
    token_sub = t.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    q = token_sub.add_parser("create", help="a one-time pairing token for a till")
    q.add_argument("--terminal", required=True)
    q.add_argument("--merchant", default="default")
    q.add_argument("--store", default="default")
    q.add_argument(
        "--region", help="set the store's region (for its region-only tills; see `stores`)"
    )
    q = token_sub.add_parser("revoke", help="refuse a till's credentials from now on")
    q.add_argument("--terminal", required=True)
    q = server_sub.add_parser("stores", help="stores and their regions")
    stores_sub = q.add_subparsers(dest="stores_command", required=True, metavar="ACTION")
    q = stores_sub.add_parser(
        "set-region", help="set a store's region (needed by its region-only tills)"
    )
    q.add_argument("store", metavar="STORE")
    q.add_argument("region", metavar="REGION", nargs="?", help="omit with --clear")
    q.add_argument("--merchant", help="refuse the change unless the store is this merchant's")
    q.add_argument("--clear", action="store_true", help="remove the store's region")
    q = server_sub.add_parser("programs", help="the program configuration sent to the tills")
    programs_sub = q.add_subparsers(dest="programs_command", required=True, metavar="ACTION")
    q = programs_sub.add_parser("set", help="check a [[programs]] file and publish it")
    q.add_argument("--merchant", default="default")
    q.add_argument("--file", required=True, help="TOML: [[programs]] (+ [guards], [nudges])")
    q = programs_sub.add_parser("show", help="the version and text the tills get")
    q.add_argument("--merchant", default="default")
    q = server_sub.add_parser(
        "terminals", help="list tills: status, last seen, program configuration version"
    )
    q.add_argument("--merchant", help="only this merchant's tills")
    server_sub.add_parser("conflicts", help="list conflicts recorded at ingest")
    server_sub.add_parser("overdrafts", help="list balances booked negative by redemptions")
    p = server_sub.add_parser(
        "verify",
        help="check every till chain the server holds (hashes, links), as the tills would",
    )
    p.add_argument("--merchant", help="only this merchant's tills")

    p = sub.add_parser("pair", help="pair this till with a central server")
    p.add_argument("--server", required=True, help="the server's URL (https in production)")
    p.add_argument("--token", required=True, help="from `pos-loyalty server token create`")
    p.add_argument(
        "--no-bootstrap",
        action="store_true",
        help="do not load the server's snapshot into an empty ledger (sync pulls every event)",
    )


def _terminals(args: argparse.Namespace, store: Any) -> int:
    rows = store.terminals(args.merchant)
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    if not rows:
        print("no terminals")
    for r in rows:
        seen = r["last_seen_at"][:19] if r["last_seen_at"] else "never"
        running, current = r["programs_version"], r["programs_current"]
        if running is None:
            programs = f"programs: not reported (current v{current})"
        elif running < current:
            programs = f"programs v{running}, behind v{current}"
        elif running > current:
            programs = f"programs v{running}, ahead of the server's v{current}"
        else:
            programs = f"programs v{running}"
        if r["programs_refused"]:
            programs += f"; refused v{r['programs_refused']}: {r['programs_problem'] or '?'}"
        print(
            f"{r['merchant_id']}/{r['store_id']}/{r['id']} {r['status']}: "
            f"seq {r['head_seq']} (epoch {r['epoch']}), last seen {seen}, {programs}"
        )
    return 0


def _fail(message: str, code: int = 1) -> int:
    print(f"pos-loyalty: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace, settings: Any) -> int:
    if args.command == "server":
        return _server(args, settings)
    if args.command == "pair":
        return _pair(args, settings)
    return _sync(args, settings)


def _server_url(args: argparse.Namespace, settings: Any) -> str:
    if args.db:
        return str(args.db)
    if os.environ.get(SERVER_DB_ENV):
        return os.environ[SERVER_DB_ENV]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{settings.data_dir / 'server.sqlite'}"


def _bad_ids(args: argparse.Namespace) -> str | None:
    """Why an id given to a ``server`` command cannot be one (a usage error), else None."""
    from sync.server.store import id_problem

    ids: list[tuple[str, str | None]] = []
    if args.server_command == "token":
        ids.append(("terminal", args.terminal))
        if args.token_command == "create":
            ids += [("merchant", args.merchant), ("store", args.store), ("region", args.region)]
    elif args.server_command == "stores":
        ids += [("store", args.store), ("region", args.region), ("merchant", args.merchant)]
    for what, value in ids:
        problem = None if value is None else id_problem(what, value)
        if problem is not None:
            return problem
    return None


def _server(args: argparse.Namespace, settings: Any) -> int:
    from sqlalchemy.exc import DBAPIError

    from sync.server.store import (
        ServerDatabaseError,
        ServerStore,
        SyncError,
        database_trouble,
        one_line,
    )

    problem = _bad_ids(args)
    if problem is not None:
        return _fail(problem, 2)
    if args.server_command == "stores" and (args.region is None) != args.clear:
        return _fail("give the store's REGION, or --clear to remove it (not both)", 2)
    try:
        store = ServerStore(_server_url(args, settings))
    except ServerDatabaseError as exc:
        return _fail(f"server database: {exc}")
    try:
        if args.server_command == "token":
            if args.token_command == "create":
                token = store.create_pairing_token(args.terminal, args.merchant, args.store)
                if args.region is not None:
                    store.set_region(args.store, args.region, args.merchant)
                out: Any = {"terminal_id": args.terminal, "token": token}
                return _emit(args, out, token)
            if not store.revoke(args.terminal):
                return _fail(f"unknown terminal {args.terminal!r}")
            return _emit(args, {"revoked": args.terminal}, f"till {args.terminal} revoked")
        if args.server_command == "stores":
            before = store.set_region(args.store, args.region, args.merchant)
            shown = args.region if args.region is not None else "none"
            return _emit(
                args,
                {"store_id": args.store, "region": args.region, "previous": before},
                f"store {args.store}: region {shown} (was {before or 'none'})",
            )
        if args.server_command == "programs":
            return _programs(args, store)
        if args.server_command == "terminals":
            return _terminals(args, store)
        if args.server_command == "verify":
            return _verify_server(args, store)
        if args.server_command in ("conflicts", "overdrafts"):
            rows = store.conflicts() if args.server_command == "conflicts" else store.overdrafts()
            if args.json:
                print(json.dumps(rows, default=str))
            elif not rows:
                print(f"no {args.server_command}")
            for r in rows:
                if args.server_command == "conflicts":
                    other = (
                        f" (first: event {r['other_event_id']} at {r['other_terminal_id']})"
                        if r.get("other_event_id")
                        else ""
                    )
                    customer = f" customer {r['customer_id']}" if r.get("customer_id") else ""
                    print(
                        f"#{r['id']} {r['recorded_at'][:19]} {r['merchant_id']}/"
                        f"{r['terminal_id']} seq {r['seq']} event {r['event_id']}{customer}"
                        f"{other}: {r['reason']}: {r['message']}"
                    )
                else:
                    print(
                        f"#{r['id']} {r['flagged_at'][:19]} {r['merchant_id']} customer "
                        f"{r['customer_id']} {r['program']} -> {r['balance_after']} "
                        f"(event {r['event_id']} at {r['terminal_id']})"
                    )
            return 0
        return _serve(args, store)
    except SyncError as exc:
        return _fail(f"{exc.code}: {exc.message}")
    except DBAPIError as exc:
        # One line, no traceback: the database refused or could not do it.
        return _fail(f"server database: {database_trouble(exc) or one_line(exc)}")
    finally:
        store.close()


def _verify_server(args: argparse.Namespace, store: Any) -> int:
    from sync.server.verify import verify_chains

    report = verify_chains(store, args.merchant)
    if args.json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "events": report.events,
                    "slots": report.slots,
                    "terminals": report.terminals,
                    "problems": [dataclasses.asdict(p) for p in report.problems],
                    "more_problems": report.more_problems,
                }
            )
        )
    else:
        scope = f"merchant {args.merchant}" if args.merchant else "all merchants"
        for problem in report.problems:
            print(problem.line())
        if report.more_problems:
            print(f"... and {report.more_problems} more")
        found = len(report.problems) + report.more_problems
        verdict = "ok" if report.ok else f"{found} problem(s)"
        print(
            f"{verdict}: {report.events} events and {report.slots} chain slots of "
            f"{report.terminals} till(s) checked ({scope})"
        )
    return 0 if report.ok else 1


def _programs(args: argparse.Namespace, store: Any) -> int:
    from pos_loyalty.config import ConfigError, load_programs_text

    merchant = args.merchant
    if args.programs_command == "show":
        version, text = store.program_config(merchant)
        out = {"merchant_id": merchant, "version": version, "config": text}
        if args.json:
            return _emit(args, out, "")
        if version == 0:
            print(f"merchant {merchant}: no program configuration (tills use their own files)")
            return 0
        print(f"merchant {merchant}: program configuration version {version}")
        print(text, end="" if text.endswith("\n") else "\n")
        return 0
    try:
        with open(args.file, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as exc:
        return _fail(f"{args.file}: cannot read the file: {exc.strerror or exc}", 2)
    except UnicodeDecodeError:
        return _fail(f"{args.file}: is not UTF-8 text", 2)
    try:
        load_programs_text(text, args.file)  # the till's own checks, named after the file
    except ConfigError as exc:
        return _fail(f"{exc} (nothing was stored)", 2)
    version, changed = store.set_program_config(merchant, text, source=args.file)
    out = {"merchant_id": merchant, "version": version, "changed": changed}
    if changed:
        message = f"merchant {merchant}: program configuration version {version} stored"
    else:
        message = f"merchant {merchant}: unchanged, still version {version}"
    return _emit(args, out, message)


def _serve(args: argparse.Namespace, store: Any) -> int:
    import gc
    import logging

    import uvicorn

    from sync.server.app import create_server_app

    if not 0 <= args.port <= 65535:
        return _fail("--port must be between 0 and 65535", 2)
    if not 0 <= args.snapshot_every <= 86_400:
        return _fail("--snapshot-every must be between 0 and 86400 seconds", 2)
    from sync.server.workers import LOG_FORMAT, MAX_WORKERS, WORKER_ENV, worker_options

    if not 1 <= args.workers <= MAX_WORKERS:
        return _fail(f"--workers must be between 1 and {MAX_WORKERS}", 2)
    if args.workers > 1 and store.is_sqlite:
        return _fail(
            "--workers above 1 needs a PostgreSQL database (--db postgresql+psycopg://...): "
            "SQLite takes one writer at a time",
            2,
        )
    busy = cannot_listen(args.host, args.port)
    if busy is not None:
        return _fail(busy)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    workers = f", {args.workers} worker processes" if args.workers > 1 else ""
    print(
        f"pos-loyalty server on http://{args.host}:{args.port}/v1/sync "
        f"(database {store.engine.url.render_as_string(hide_password=True)}{workers})",
        flush=True,
    )
    _warm_snapshots(store, args.snapshot_every)
    if args.workers > 1:
        # uvicorn's supervisor: it binds the port here, spawns the workers (each builds its
        # own store and app: ``sync.server.workers``), restarts one that dies, and stops
        # them on SIGINT/SIGTERM. This process keeps the bootstrap snapshots warm.
        os.environ[WORKER_ENV] = worker_options(
            store.engine.url.render_as_string(hide_password=False), args.max_body
        )
        with _startup_failure(args):
            uvicorn.run(
                "sync.server.workers:worker_app",
                factory=True,
                workers=args.workers,
                host=args.host,
                port=args.port,
                access_log=False,
                log_level="warning",
            )
        return 0
    app = create_server_app(store, max_body_bytes=args.max_body)
    # Everything loaded so far (modules, schemas, the app) lives as long as the process: out
    # of the cyclic collector's way, so that its full collections, which a busy ingest
    # triggers, do not walk it each time (bench/README.md, Sync).
    gc.freeze()
    with _startup_failure(args):
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            access_log=False,
            log_level="warning",
        )
    return 0


@contextlib.contextmanager
def _startup_failure(args: argparse.Namespace) -> Iterator[None]:
    """uvicorn exits 3 when it cannot start (the port taken between ``cannot_listen`` and
    its own bind): one line and exit 1 instead, as for any refusal."""
    try:
        yield
    except SystemExit as exc:
        if exc.code in (0, None):
            raise
        _fail(f"the server could not start on {args.host}:{args.port} (see above)")
        raise SystemExit(1) from None


def _warm_snapshots(store: Any, every: float) -> None:
    """Build the bootstrap snapshots in the background and keep them up to date every
    ``every`` seconds (``ServerStore.keep_snapshots_warm``): the first till to bootstrap
    after a start gets a cached one (or waits for it), and a later one, or one after a
    restart, folds only the few events since the last pass."""
    import threading

    stop = threading.Event()  # the thread is a daemon: it ends with the process
    threading.Thread(
        target=store.keep_snapshots_warm, args=(every, stop), name="snapshots", daemon=True
    ).start()


def _pair(args: argparse.Namespace, settings: Any) -> int:
    from pos_loyalty.bootstrap import ledger_path
    from pos_loyalty.ledger.replication import Replica
    from pos_loyalty.ledger.store import Ledger
    from sync.client import SyncFailed, pair

    if not args.server.startswith(("http://", "https://")):
        return _fail("--server must be an http:// or https:// URL", 2)
    try:
        creds = pair(args.server, args.token, terminal_id=settings.terminal_id)
    except SyncFailed as exc:
        return _fail(str(exc))
    from sync.bootstrap import BootstrapRefused, check_empty

    ledger = Ledger(ledger_path(settings), settings.terminal_id)
    try:
        Replica(ledger).save_credentials(creds)
        paired = (
            f"paired till {creds.terminal_id} with {creds.server_url} "
            f"(merchant {creds.merchant_id}, store {creds.store_id})"
        )
        out: dict[str, Any] = {"terminal_id": creds.terminal_id, "merchant_id": creds.merchant_id}
        if args.no_bootstrap:
            return _emit(args, out, paired)
        try:
            check_empty(ledger)
        except BootstrapRefused as exc:  # a till with data catches up by pulling
            return _emit(args, out, f"{paired}; no snapshot loaded: {exc}")
        if not args.json:
            print(paired, flush=True)
        code, loaded = _bootstrap(args, settings, ledger, creds)
        if code:
            return code
        return _emit(args, {**out, "bootstrap": loaded}, _loaded_text(loaded))
    except ValueError as exc:
        return _fail(str(exc))
    finally:
        ledger.close()


def _loaded_text(loaded: dict[str, Any]) -> str:
    return (
        f"loaded the server's snapshot {loaded['cursor']}: {loaded['customers']} customers "
        f"in {loaded['seconds']:.1f} s" + (" (resumed)" if loaded["resumed"] else "")
    )


def _bootstrap(
    args: argparse.Namespace, settings: Any, ledger: Any, creds: Any
) -> tuple[int, dict[str, Any]]:
    """Load the server's snapshot into the (empty) ledger, or finish an interrupted load,
    holding the sync lock; a progress bar on stderr unless --json or not a terminal."""
    from pos_loyalty.ledger.replication import Replica
    from sync.bootstrap import BootstrapRefused, bootstrap
    from sync.client import SyncFailed
    from sync.daemon import AlreadyRunning, LedgerLock

    lock = LedgerLock(settings.data_dir)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        return _fail(f"{exc}: stop it before loading a snapshot"), {}
    try:
        with _progress(quiet=args.json or not sys.stderr.isatty()) as progress:
            result = bootstrap(
                Replica(ledger),
                creds,
                region_only=bool(settings.sync.region_only),
                progress=progress,
            )
    except BootstrapRefused as exc:
        return _fail(f"cannot bootstrap: {exc}"), {}
    except SyncFailed as exc:
        return _fail(f"bootstrap failed: {exc} (run `pos-loyalty sync --bootstrap` to resume)"), {}
    finally:
        lock.release()
    return 0, {
        "cursor": result.cursor,
        "customers": result.customers,
        "pages": result.pages,
        "resumed": result.resumed,
        "seconds": round(result.seconds, 3),
    }


class _progress:
    """A rich progress bar of customers loaded (stderr), or nothing when ``quiet``."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Any:
        if self.quiet:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self._bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task("customers loaded", total=None)

        def update(done: int, total: int) -> None:
            self._bar.update(self._task, completed=done, total=total)

        return update

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()


def _sync(args: argparse.Namespace, settings: Any) -> int:
    import logging
    import signal

    from pos_loyalty.bootstrap import ledger_path
    from pos_loyalty.ledger.replication import Credentials, Replica
    from pos_loyalty.ledger.store import FILE_CHECK_EVERY, Ledger
    from pos_loyalty.server_programs import ServerPrograms
    from sync.client import SyncFailed
    from sync.daemon import AlreadyRunning, SyncWorker

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("alembic", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    ledger = Ledger(ledger_path(settings), settings.terminal_id)
    try:
        creds = Replica(ledger).credentials()
        if creds is None:
            return _fail("this till is not paired: run `pos-loyalty pair --server URL --token T`")
        if args.server:
            creds = Credentials(
                args.server, creds.terminal_id, creds.merchant_id, creds.store_id, creds.credential
            )
        if args.bootstrap:
            code, loaded = _bootstrap(args, settings, ledger, creds)
            return code or _emit(args, loaded, _loaded_text(loaded))
        if args.resend_from is not None and args.resend_from < 1:
            return _fail("--resend-from must be a seq of 1 or more", 2)
        worker = SyncWorker(
            ledger,
            creds,
            data_dir=settings.data_dir,
            interval=float(settings.sync.interval_seconds),
            programs=ServerPrograms(settings),
            region_only=settings.sync.region_only,
        )
        if not args.once:
            signal.signal(signal.SIGTERM, lambda *_: worker._stop.set())
            ledger.start_file_check(every=FILE_CHECK_EVERY)  # runs for months: damage pauses it
        try:
            worker.run(once=args.once, resend_from=args.resend_from)
        except AlreadyRunning as exc:
            return _fail(str(exc))
        except SyncFailed as exc:
            return _fail(f"sync failed: {exc}")
        if args.once:
            status = worker.status()["sync"]
            return _emit(
                args,
                status,
                f"synced with {creds.server_url}: {status['events_waiting']} waiting, "
                f"{status['conflicts']} conflict(s)",
            )
        return 0
    finally:
        ledger.close()


def _emit(args: argparse.Namespace, out: Any, text: str) -> int:
    print(json.dumps(out, sort_keys=True, default=str) if args.json else text)
    return 0
