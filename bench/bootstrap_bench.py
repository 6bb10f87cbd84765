"""Bootstrap benchmark (issue 5, item 6): a new till loads a server snapshot of M customers.

Seeds the server (PostgreSQL, started privately unless ``--pg URL``; or ``--sqlite``) with M
customers, each with an enrolment, a card and a points credit that leaves an expiring lot
(3 events per customer, ingested through ``ServerStore.ingest``), then times over HTTP:

- ``cold, nothing persisted``: a new till's ``sync.bootstrap`` while the server holds no
  snapshot at all, in memory or in its database (it folds every event);
- ``cold after a server restart``: the server persisted its fold (``snapshot_state``,
  ``snapshot_customers``) and a new process reads it back instead of folding;
- ``warm``: the server's snapshot is cached in the process;
- ``cold after a restart, 1 % more customers since``: the new process folds only the events
  after the persisted position;
- ``after 1 % more customers (server running)``: the live fold moves forward;
- the server's share (``ServerStore.bootstrap_page`` alone) of the cold runs and of the warm
  one (page assembly), the rest being transfer and the till (validate, load, digest);
- ``--replay``: the old way for comparison, a new till pulling every event from cursor 0.

Target: bootstrap of 100,000 customers <= 5 s. Figures, not a timed test. Usage::

    .venv/bin/python bench/bootstrap_bench.py [--customers 100000] [--page 10000] [--pg URL]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sqlalchemy import func, select  # noqa: E402
from sync_bench import Postgres, Server, paired_till  # noqa: E402

from pos_loyalty.domain.events import Event, Kind, Posting, Unit  # noqa: E402
from pos_loyalty.domain.ids import uuid7  # noqa: E402
from pos_loyalty.ledger.replication import Replica  # noqa: E402
from pos_loyalty.ledger.verify import verify  # noqa: E402
from sync.bootstrap import bootstrap  # noqa: E402
from sync.client import SyncClient, _wire  # noqa: E402
from sync.protocol import PushRequest, WireEvent  # noqa: E402
from sync.server import schema  # noqa: E402
from sync.server.snapshots import SnapshotCache  # noqa: E402
from sync.server.store import ServerStore  # noqa: E402

TARGET_S = 5.0
TARGET_CUSTOMERS = 100_000


def seed(store: ServerStore, seeder: Replica, customers: int, first: int = 0) -> None:
    """M customers through the server's real ingest (3 events each)."""
    at = datetime.now(UTC)
    expires = at + timedelta(days=365)
    creds = seeder.credentials()
    assert creds is not None
    auth = store.authenticate(creds.credential)
    tid = seeder.terminal_id
    step = 5000
    for start in range(first, first + customers, step):
        events = []
        for i in range(start, min(first + customers, start + step)):
            cid = uuid7()
            events.append(
                Event(
                    uuid7(),
                    Kind.CUSTOMER_ENROLLED,
                    tid,
                    at,
                    cid,
                    data={"profile": {"name": f"customer {i}"}},
                )
            )
            events.append(
                Event(uuid7(), Kind.CARD_ISSUED, tid, at, cid, data={"code": f"PL{i:013d}"})
            )
            events.append(
                Event(
                    uuid7(),
                    Kind.ACCOUNT_ADJUSTED,
                    tid,
                    at,
                    cid,
                    postings=(Posting("points", Unit.POINTS, 10 + i % 50, expires_at=expires),),
                    data={"reason": "seed"},
                )
            )
        with seeder.ledger.transaction() as tx:
            tx.append(events)
        waiting = seeder.unsynced(10**9)
        for i in range(0, len(waiting), 1000):
            store.ingest(
                auth,
                PushRequest(
                    terminal_id=tid,
                    events=[WireEvent.model_validate(_wire(e)) for e in waiting[i : i + 1000]],
                ),
            )
        with seeder.ledger.transaction() as tx:
            Replica._save_state(tx.conn, acked_seq=waiting[-1].seq)


def verdict(seconds: float, customers: int) -> str:
    if customers < TARGET_CUSTOMERS:
        return f"(target <= {TARGET_S:.0f} s for {TARGET_CUSTOMERS:,} customers; smaller run)"
    return "met" if seconds <= TARGET_S else "MISSED"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=TARGET_CUSTOMERS)
    parser.add_argument("--page", type=int, default=10_000, help="customers per page")
    parser.add_argument("--pg", help="PostgreSQL URL (default: start a private server)")
    parser.add_argument("--sqlite", action="store_true", help="a SQLite server instead")
    parser.add_argument("--replay", action="store_true", help="also time a pull of every event")
    parser.add_argument("--verify", action="store_true", help="ledger verify the new till")
    args = parser.parse_args()
    if args.customers < 1 or args.page < 1:
        parser.error("--customers and --page must be at least 1")
    root = Path(tempfile.mkdtemp(prefix="bootstrap-bench-"))
    pg = None if (args.pg or args.sqlite) else Postgres()
    url = f"sqlite:///{root / 'server.sqlite'}" if args.sqlite else (args.pg or pg.url())  # type: ignore[union-attr]
    store = ServerStore(url)
    server = Server(store)
    try:
        seeder = paired_till(store, server, root, "seed-till")
        print(f"seeding {args.customers:,} customers (3 events each) ...", flush=True)
        start = time.perf_counter()
        seed(store, seeder, args.customers)
        print(f"seeded in {time.perf_counter() - start:.1f} s", flush=True)

        auth = store.authenticate(seeder.credentials().credential)  # type: ignore[union-attr]

        def server_alone() -> float:
            """The server's build of the snapshot and its first page, no HTTP."""
            start = time.perf_counter()
            store.bootstrap_page(auth, None, None, args.page)
            return time.perf_counter() - start

        def new_till(name: str, customers: int) -> tuple[Replica, float]:
            fresh = paired_till(store, server, root, name)
            creds = fresh.credentials()
            assert creds is not None
            start = time.perf_counter()
            done = bootstrap(fresh, creds, page=args.page)
            took = time.perf_counter() - start
            assert done.customers == customers, done
            return fresh, took

        n = args.customers
        # 1. Nothing persisted (a server that never built a snapshot, or before s0003): the
        #    full fold of every event.
        store.snapshots = SnapshotCache(persist=False)
        full_server = server_alone()
        store.snapshots.clear()
        _, cold_full = new_till("new-till-0", n)
        print(
            f"bootstrap cold, nothing persisted (full fold of every event): {n:,} customers "
            f"in {cold_full:.2f} s {verdict(cold_full, n)}; the server's fold + encode + "
            f"first page alone: {full_server:.2f} s"
        )
        # 2. The server persists its fold (warm-up at start, or any bootstrap) ...
        store.snapshots = SnapshotCache()
        first_build = server_alone()
        print(f"  first build with persisting (fold + encode + save): {first_build:.2f} s")
        with store.engine.connect() as conn:
            sc, st = schema.snapshot_customers, schema.snapshot_state
            body = conn.execute(select(func.sum(func.length(sc.c.body)))).scalar_one()
            blob = conn.execute(select(func.sum(func.length(st.c.state)))).scalar_one()
        print(
            f"  persisted: encoded customers {int(body) / 1e6:.1f} MB, fold state "
            f"{int(blob) / 1e6:.1f} MB"
        )
        # ... and restarts: the new process reads the persisted fold back.
        store.snapshots.clear()
        resume_server = server_alone()
        store.snapshots.clear()
        first, cold = new_till("new-till-1", n)
        print(
            f"bootstrap cold: {n:,} customers in {cold:.2f} s over HTTP, first till after a "
            f"server restart (persisted snapshot current) {verdict(cold, n)}; the server's "
            f"read-back + first page alone: {resume_server:.2f} s"
        )
        # 3. Warm: the snapshot is cached in the process.
        _, warm = new_till("new-till-2", n)
        assembly = 0.0
        after = None
        while True:
            start = time.perf_counter()
            body = store.bootstrap_page(auth, None, after, args.page)
            assembly += time.perf_counter() - start
            after = json.loads(body)["next_after"]
            if after is None:
                break
        print(
            f"bootstrap warm: {n:,} customers in {warm:.2f} s (server snapshot cached) "
            f"{verdict(warm, n)}; of which the server's page assembly ≈ {assembly:.2f} s, the "
            f"rest is transfer and the till (validate, load, keep pages, digest)"
        )
        # 4. New events since the persisted position, then a restart: the new process folds
        #    only those (reading back the customers they touch).
        more = max(1, n // 100)
        seed(store, seeder, more, first=n)
        store.snapshots.clear()
        _, cold_more = new_till("new-till-3", n + more)
        print(
            f"bootstrap cold after a restart, {more:,} customers ingested since the persisted "
            f"snapshot: {n + more:,} customers in {cold_more:.2f} s "
            f"{verdict(cold_more, n + more)}"
        )
        # 5. New events while the server runs: the live fold moves forward.
        seed(store, seeder, more, first=n + more)
        _, later = new_till("new-till-4", n + 2 * more)
        print(
            f"bootstrap after {more:,} more customers were ingested (server running): "
            f"{n + 2 * more:,} customers in {later:.2f} s {verdict(later, n + 2 * more)}"
        )
        size = sum(
            f.stat().st_size for f in root.glob("new-till-1.sqlite*") if f.is_file()
        )  # the file and its WAL
        print(f"  till ledger after bootstrap: {size / 1e6:.1f} MB")
        if args.verify:
            start = time.perf_counter()
            report = verify(first.ledger)
            status = "ok" if report.ok else f"FAILED: {report.problems[0]}"
            print(f"verify after bootstrap: {status} in {time.perf_counter() - start:.2f} s")
        if args.replay:
            fresh = paired_till(store, server, root, "replay-till")
            creds = fresh.credentials()
            assert creds is not None
            client = SyncClient(fresh, creds, page=5000)
            start = time.perf_counter()
            applied = client.pull()
            took = time.perf_counter() - start
            client.close()
            print(
                f"replay baseline: pulled {applied.applied:,} events of {args.customers:,} "
                f"customers in {took:.2f} s"
            )
    finally:
        server.stop()
        store.close()
        if pg is not None:
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
