"""Bootstrap benchmark (issue 5, item 6): a new till loads a server snapshot of M customers.

Seeds the server (PostgreSQL, started privately unless ``--pg URL``; or ``--sqlite``) with M
customers, each with an enrolment, a card and a points credit that leaves an expiring lot
(3 events per customer, ingested through ``ServerStore.ingest``), then times over HTTP:

- ``bootstrap cold``: a new till's ``sync.bootstrap`` while the server has no cached
  snapshot (the server folds every event: the first till after a server start);
- ``bootstrap warm``: a second new till right after (the server's snapshot is cached);
- a third new till after 1 % more customers were ingested (the server folds only those);
- the server's share of the cold run (fold + encode, ``ServerStore.bootstrap_page`` of the
  first page) and the till's share (validate + load + digest);
- ``--replay``: the old way for comparison, a new till pulling every event from cursor 0.

Target: bootstrap of 100,000 customers <= 5 s. Figures, not a timed test. Usage::

    .venv/bin/python bench/bootstrap_bench.py [--customers 100000] [--page 10000] [--pg URL]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sync_bench import Postgres, Server, paired_till  # noqa: E402

from pos_loyalty.domain.events import Event, Kind, Posting, Unit  # noqa: E402
from pos_loyalty.domain.ids import uuid7  # noqa: E402
from pos_loyalty.ledger.replication import Replica  # noqa: E402
from pos_loyalty.ledger.verify import verify  # noqa: E402
from sync.bootstrap import bootstrap  # noqa: E402
from sync.client import SyncClient, _wire  # noqa: E402
from sync.protocol import PushRequest, WireEvent  # noqa: E402
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

        store.snapshots.clear()
        auth = store.authenticate(seeder.credentials().credential)  # type: ignore[union-attr]
        start = time.perf_counter()
        store.bootstrap_page(auth, None, None, args.page)
        server_cold = time.perf_counter() - start
        store.snapshots.clear()

        results = []
        for name in ("new-till-1", "new-till-2"):
            fresh = paired_till(store, server, root, name)
            creds = fresh.credentials()
            assert creds is not None
            start = time.perf_counter()
            done = bootstrap(fresh, creds, page=args.page)
            took = time.perf_counter() - start
            assert done.customers == args.customers, done
            results.append((fresh, took, done))
        (first, cold, done), (_, warm, _) = results
        print(
            f"bootstrap cold: {done.customers:,} customers in {cold:.2f} s over HTTP, "
            f"{done.pages} page(s) of {args.page:,} {verdict(cold, done.customers)}"
        )
        print(
            f"  server fold + encode + first page alone: {server_cold:.2f} s; "
            f"the rest (transfer, validate, load, digest) ≈ {cold - server_cold:.2f} s"
        )
        print(
            f"bootstrap warm: {done.customers:,} customers in {warm:.2f} s "
            f"(server snapshot cached) {verdict(warm, done.customers)}"
        )
        # New events after the cached snapshot: the next snapshot folds and re-encodes only
        # what they touched.
        more = max(1, args.customers // 100)
        seed(store, seeder, more, first=args.customers)
        fresh = paired_till(store, server, root, "new-till-3")
        creds = fresh.credentials()
        assert creds is not None
        start = time.perf_counter()
        later = bootstrap(fresh, creds, page=args.page)
        took = time.perf_counter() - start
        assert later.customers == args.customers + more, later
        print(
            f"bootstrap after {more:,} more customers were ingested: {later.customers:,} "
            f"customers in {took:.2f} s (server folds only the new events) "
            f"{verdict(took, later.customers)}"
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
