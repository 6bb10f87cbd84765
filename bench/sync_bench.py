"""Sync benchmarks (issue 5).

1. Server ingest over HTTP into PostgreSQL (events/s) against a raw psycopg ``executemany``
   of the same rows into a table of the same shape, in the same run: both and the ratio
   (target >= 0.5).
   The pushing tills (``--tills``, 4 by default) send at once, their requests encoded
   before the clock starts (as the baseline's rows are built before its clock starts); the
   server runs ``--workers`` processes (default: one per core).
2. Catch-up: a till with N waiting events pushes them all (target <= 1 s for 10,000), its
   real ``SyncClient``, also against a raw insert of its rows.
3. Bootstrap: a new till pulls everything from a server holding M customers (enrolment +
   card + one sale each) (target <= 5 s for 100,000).

Starts its own PostgreSQL (Debian binaries, temporary directory, loopback, fsync on) unless
``--pg URL`` is given. The ingest/catch-up runs (``--runs``, each with a new till) go to a
``pos-loyalty server`` process, as in production (``--in-process``: a server thread in this
process, which shares the interpreter lock with the till). Usage::

    .venv/bin/python bench/sync_bench.py [--events 10000] [--runs 3] [--customers 100000]
        [--pg URL] [--in-process] [--workers N] [--tills N] [--payload KIND]
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvicorn  # noqa: E402

from pos_loyalty.domain.events import Event, Kind, Posting, Unit  # noqa: E402
from pos_loyalty.domain.ids import uuid7  # noqa: E402
from pos_loyalty.ledger.replication import Replica  # noqa: E402
from pos_loyalty.ledger.store import Ledger  # noqa: E402
from sync.client import SyncClient, _wire, pair  # noqa: E402
from sync.protocol import PushRequest, WireEvent  # noqa: E402
from sync.server.app import create_server_app  # noqa: E402
from sync.server.store import ServerStore  # noqa: E402

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sync-bench-pg-"))
        self.port = free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self.data = self.dir / "data"
        self._run([str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"])
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._run(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log")]
            + ["-w", "-o", opts, "start"]
        )

    def _run(self, cmd: list[str]) -> None:
        subprocess.run(self.prefix + cmd, check=True, capture_output=True)

    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"])
        shutil.rmtree(self.dir, ignore_errors=True)


class Server:
    def __init__(self, store: ServerStore) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_server_app(store, rate=1e6, burst=10**6),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class ServerProcess:
    """The central server as it runs in production: its own process (``pos-loyalty
    server --db URL --port N``), so that the till's work and the server's do not share one
    interpreter (and its GIL) as they would with the in-thread ``Server``."""

    def __init__(self, url: str, root: Path, workers: int = 1) -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        repo = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pos_loyalty.cli", "--data-dir", str(root / "server")]
            + ["server", "--db", url, "--port", str(self.port)]
            + (["--workers", str(workers)] if workers != 1 else []),
            cwd=repo,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server process did not start")
            try:
                if httpx.get(self.url + "/v1/sync/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def sale_template(root: Path) -> Event:
    """A real sale event: a 5-line basket (two coffees, bakery, drinks, food) committed by
    the demo shop's ``Service`` for an enrolled customer (tier spend, points with expiry,
    stamps; ~600 bytes of payload)."""
    from _common import basket_line, demo_service, line_json

    from pos_loyalty.domain.basket import Basket
    from pos_loyalty.service import Profile, SaleRequest

    service = demo_service(root / "template")
    card = service.enrol(Profile(name="Bench"))
    code = card["card"]["code"]
    basket = Basket(lines=tuple(basket_line(i) for i in (1, 2, 3, 5, 7)))
    raw = {
        "receipt_id": "template",
        "card": code,
        "basket": {"lines": [line_json(line) for line in basket.lines]},
    }
    service.commit(SaleRequest(basket=basket, card=code, receipt_id="template", raw=raw))
    with service.ledger.reader() as tx:
        sale = next(e for _, e in tx.history(card["customer_id"]) if e.kind is Kind.SALE_COMMITTED)
    service.ledger.close()
    return sale


def fill_till(ledger: Ledger, n: int, customers: int = 1000, template: Event | None = None) -> None:
    """``n`` events of ``customers`` new customers: small point adjustments (~80 bytes of
    payload), or copies of ``template`` (a real sale) with their own ids and receipt ids."""
    at = datetime.now(UTC)
    ids = [uuid7() for _ in range(customers)]
    events: list[Event] = []
    for i in range(n):
        if template is None:
            events.append(
                Event(
                    uuid7(),
                    Kind.ACCOUNT_ADJUSTED,
                    ledger.terminal_id,
                    at,
                    ids[i % customers],
                    postings=(Posting("points", Unit.POINTS, 1 + i % 7),),
                    data={"reason": "bench"},
                )
            )
        else:
            receipt = f"{ledger.terminal_id}-{i:06d}"
            events.append(
                replace(
                    template,
                    id=uuid7(),
                    terminal_id=ledger.terminal_id,
                    at=at,
                    customer_id=ids[i % customers],
                    key=receipt,
                    data={**template.data, "receipt_id": receipt},
                )
            )
    with ledger.transaction() as tx:
        tx.append(events)


def paired_till(
    store: ServerStore, server: Server | ServerProcess, root: Path, terminal: str
) -> Replica:
    ledger = Ledger(root / f"{terminal}.sqlite", terminal)
    replica = Replica(ledger)
    token = store.create_pairing_token(terminal, "bench", "bench-store")
    replica.save_credentials(pair(server.url, token))
    return replica


def bench_ingest(
    store: ServerStore,
    server: Server | ServerProcess,
    root: Path,
    n: int,
    pg_dsn: str,
    run: int,
    template: Event | None = None,
    tills: int = 2,
) -> None:
    """Per run: the catch-up (one till's ``SyncClient.push`` of ``n`` waiting events) and
    the server's ingest (``tills`` tills at once, ``n`` events in all, their push requests
    encoded before the clock starts, as the raw baseline's rows are), each against a raw
    ``executemany`` of the same rows."""
    what = "adjustment" if template is None else "sale"
    replica = paired_till(store, server, root, f"catchup-{what}-till-{run}")
    fill_till(replica.ledger, n, template=template)
    creds = replica.credentials()
    assert creds is not None
    client = SyncClient(replica, creds, batch=1000)
    settle(pg_dsn)
    start = time.perf_counter()
    result = client.push()
    push_s = time.perf_counter() - start
    client.close()
    assert result.accepted == n, result
    catchup_rows = replica_rows(replica)
    replica.ledger.close()

    streams: list[tuple[list[bytes], dict[str, str]]] = []
    ingest_rows: list[tuple[object, ...]] = []
    for k in range(tills):
        till = paired_till(store, server, root, f"ingest-{what}-till-{run}-{k}")
        share = n // tills + (1 if k < n % tills else 0)
        fill_till(till.ledger, share, template=template)
        streams.append((push_bodies(till), push_headers(till)))
        ingest_rows.extend(replica_rows(till, first=len(ingest_rows)))
        till.ledger.close()
    settle(pg_dsn)
    ingest_s = send_concurrently(server.url, streams)

    raw_push_s = raw_insert(pg_dsn, catchup_rows)
    raw_ingest_s = raw_insert(pg_dsn, ingest_rows)
    size = sum(len(str(r[10])) for r in ingest_rows) // n
    workers = server.workers if isinstance(server, ServerProcess) else 1
    print(f"[{what} events, {size} bytes of payload each; server: {workers} worker process(es)]")
    print(
        f"ingest over HTTP into PostgreSQL ({tills} tills at once): {n} events in "
        f"{ingest_s:.2f} s = {n / ingest_s:,.0f}/s"
    )
    print(
        f"raw psycopg executemany of the same rows:       {n} events in {raw_ingest_s:.2f} s"
        f" = {n / raw_ingest_s:,.0f}/s"
    )
    print(f"ratio {raw_ingest_s / ingest_s:.2f} (target >= 0.5); batches of 1000, one commit each")
    print(
        f"catch-up: one till's {n} waiting events pushed in {push_s:.2f} s (target <= 1 s for"
        f" 10,000); raw executemany of its rows {raw_push_s:.2f} s, ratio"
        f" {raw_push_s / push_s:.2f}"
    )


def settle(pg_dsn: str) -> None:
    """Before each timed part: planner statistics, as autovacuum keeps them on a running
    server (this database is new, and without them PostgreSQL plans the look-ups for
    near-empty tables: the id look-up then filters every stored event of the merchant), and
    a checkpoint, so that neither the server nor the baseline is timed while PostgreSQL
    vacuums or writes back what the part before it wrote (the baseline moved from 0.18 to
    0.4-0.7 s in some runs without it)."""
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")


def push_bodies(replica: Replica, batch: int = 1000) -> list[bytes]:
    """The till's waiting events as the push requests ``SyncClient`` sends (JSON bytes)."""
    import orjson

    from sync.protocol import PROTOCOL_VERSION

    waiting = replica.unsynced(10**9)
    return [
        orjson.dumps(
            {
                "protocol": PROTOCOL_VERSION,
                "terminal_id": replica.terminal_id,
                "events": [_wire(e) for e in waiting[i : i + batch]],
            }
        )
        for i in range(0, len(waiting), batch)
    ]


def push_headers(replica: Replica) -> dict[str, str]:
    creds = replica.credentials()
    assert creds is not None
    return {"authorization": f"Bearer {creds.credential}", "content-type": "application/json"}


def send_concurrently(url: str, streams: list[tuple[list[bytes], dict[str, str]]]) -> float:
    """Each till's requests in order on its own connection, all tills at once; seconds."""
    import httpx

    clients = [httpx.Client(timeout=120) for _ in streams]
    failures: list[str] = []

    def send(client: httpx.Client, bodies: list[bytes], headers: dict[str, str]) -> None:
        for body in bodies:
            answer = client.post(url + "/v1/sync/push", content=body, headers=headers)
            if answer.status_code != 200 or b'"accepted"' not in answer.content:
                failures.append(f"{answer.status_code}: {answer.text[:300]}")
                return

    threads = [
        threading.Thread(target=send, args=(c, bodies, headers))
        for c, (bodies, headers) in zip(clients, streams, strict=True)
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    for c in clients:
        c.close()
    if failures:
        raise RuntimeError(f"a push failed: {failures[0]}")
    return took


def raw_insert(pg_dsn: str, rows: list[tuple[object, ...]]) -> float:
    """Seconds for a raw ``executemany`` of ``rows`` into a table shaped like ``events``
    (batches of 1000, a commit each, as the server's)."""
    import psycopg

    with psycopg.connect(pg_dsn) as conn:
        conn.execute("DROP TABLE IF EXISTS raw_events")
        conn.execute("CREATE TABLE raw_events (LIKE events INCLUDING ALL)")
        conn.commit()
        settle(pg_dsn)
        start = time.perf_counter()
        with conn.cursor() as cur:
            for i in range(0, len(rows), 1000):
                cur.executemany(
                    "INSERT INTO raw_events (merchant_id, id, server_seq, terminal_id, epoch,"
                    " seq, kind, at, customer_id, key, payload, prev_hash, hash, received_at)"
                    " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    rows[i : i + 1000],
                )
                conn.commit()
        took = time.perf_counter() - start
        conn.execute("DROP TABLE raw_events")
        conn.commit()
    return took


def replica_rows(replica: Replica, first: int = 0) -> list[tuple[object, ...]]:
    """The till's events as the server's ``events`` rows (server_seq from ``first``)."""
    now = datetime.now(UTC).isoformat()
    from sqlalchemy import select

    from pos_loyalty.ledger import schema

    rows: list[tuple[object, ...]] = []
    prev = b""
    with replica.ledger.reader() as tx:
        for i, r in enumerate(tx.conn.execute(select(schema.events).order_by(schema.events.c.seq))):
            # 0006_events stores a till's own chain link as NULL (implied by the row before);
            # the server stores it, so the baseline row carries it too.
            prev = bytes(r.prev_hash) if r.prev_hash is not None else prev
            rows.append(
                (
                    "raw",
                    r.id,
                    first + i,
                    r.terminal_id,
                    1,
                    r.seq,
                    r.kind,
                    r.at,
                    r.customer_id,
                    r.key,
                    tx.payload_text(r.payload),  # the text the server stores
                    prev,
                    bytes(r.hash),
                    now,
                )
            )
            prev = bytes(r.hash)
    return rows


def bench_bootstrap(store: ServerStore, server: Server, root: Path, customers: int) -> None:
    seeder = paired_till(store, server, root, "seed-till")
    at = datetime.now(UTC)
    print(f"seeding {customers} customers (3 events each) ...", flush=True)
    auth = store.authenticate(seeder.credentials().credential)  # type: ignore[union-attr]
    step = 5000
    for start in range(0, customers, step):
        events = []
        for i in range(start, min(customers, start + step)):
            cid = uuid7()
            events.append(
                Event(uuid7(), Kind.CUSTOMER_ENROLLED, "seed-till", at, cid, data={"profile": {}})
            )
            events.append(
                Event(uuid7(), Kind.CARD_ISSUED, "seed-till", at, cid, data={"code": f"PL{i:013d}"})
            )
            events.append(
                Event(
                    uuid7(),
                    Kind.ACCOUNT_ADJUSTED,
                    "seed-till",
                    at,
                    cid,
                    postings=(Posting("points", Unit.POINTS, 10),),
                    data={"reason": "seed"},
                )
            )
        with seeder.ledger.transaction() as tx:
            tx.append(events)
        waiting = seeder.unsynced(10**9)
        for i in range(0, len(waiting), 1000):
            chunk = waiting[i : i + 1000]
            store.ingest(
                auth,
                PushRequest(
                    terminal_id="seed-till",
                    events=[WireEvent.model_validate(_wire(e)) for e in chunk],
                ),
            )
        with seeder.ledger.transaction() as tx:
            Replica._save_state(tx.conn, acked_seq=waiting[-1].seq)
    fresh = paired_till(store, server, root, "new-till")
    creds = fresh.credentials()
    assert creds is not None
    client = SyncClient(fresh, creds, page=5000)
    start = time.perf_counter()
    applied = client.pull()
    took = time.perf_counter() - start
    client.close()
    print(
        f"bootstrap: new till pulled {applied.applied} events of {customers} customers "
        f"in {took:.2f} s (target <= 5 s for 100,000 customers)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--pg", help="PostgreSQL URL (default: start a private server)")
    parser.add_argument("--runs", type=int, default=3, help="ingest runs (each a new till)")
    parser.add_argument(
        "--payload",
        choices=("adjustment", "sale", "both"),
        default="both",
        help="what the tills push: small point adjustments, copies of a real 5-line sale, or"
        " both (each run: an adjustment till, then a sale till)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="ingest into the server in a thread of this process (default: its own process)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="the server's worker processes (`pos-loyalty server --workers`; default: one per"
        " core)",
    )
    parser.add_argument(
        "--tills", type=int, default=4, help="tills pushing at once in the ingest figure"
    )
    args = parser.parse_args()
    pg = None if args.pg else Postgres()
    url = args.pg or pg.url()  # type: ignore[union-attr]
    root = Path(tempfile.mkdtemp(prefix="sync-bench-"))
    store = ServerStore(url)
    server = Server(store)
    try:
        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        ingest_server = server if args.in_process else ServerProcess(url, root, args.workers)
        try:
            sale = sale_template(root) if args.payload != "adjustment" else None
            kinds = {"adjustment": [None], "sale": [sale], "both": [None, sale]}[args.payload]
            for run in range(args.runs):
                for template in kinds:
                    bench_ingest(
                        store, ingest_server, root, args.events, dsn, run, template, args.tills
                    )
        finally:
            if ingest_server is not server:
                ingest_server.stop()
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if args.customers:
            bench_bootstrap(store, server, root, args.customers)
    finally:
        server.stop()
        store.close()
        if pg is not None:
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
