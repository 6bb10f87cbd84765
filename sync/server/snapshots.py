"""Full snapshots for bootstrapping tills (``GET /v1/sync/bootstrap``).

A snapshot "as of cursor C" is the fold (``pos_loyalty.ledger.snapshot.SnapshotFold``) of the
merchant's stored events with ``server_seq <= C`` in ``server_seq`` order, plus every till's
chain head at C. Positions up to ``merchants.last_seq`` are committed and never change, so a
snapshot is a pure function of C: it is read in one transaction (REPEATABLE READ on
PostgreSQL, one transaction on SQLite) that fixes C, and can be rebuilt for the same C at any
time (a till resuming an interrupted bootstrap after a server restart gets the same pages and
the same digest).

Cost: the fold runs on the server when a snapshot is first asked for. It is cached per
process: the fold itself per merchant (a later snapshot folds only the events after the
cached one), and the encoded snapshot per (merchant, cursor, region), a few at a time. The
fold is also persisted in the server database (``snapshot_state``: ``SnapshotFold.save_state``
at one position; ``snapshot_customers``: every customer's encoded wire form then), so a new
process (a restart) reads it back (``SnapshotFold.resume``) and folds only the events after
it: the result is the full fold's, byte for byte (``tests/sync/test_bootstrap.py``). A
request for an older cursor than the cached or persisted fold (a resume after it moved on)
folds from scratch up to it, aside.

Region scope: a customer's home store is the store of the till that enrolled them; a till
asking for ``scope=region`` gets only the customers whose home store is in its own store's
region (customers with no enrolment on the server are served to every region).
"""

from __future__ import annotations

import json
import logging
import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, union_all, update
from sqlalchemy.exc import DBAPIError

from pos_loyalty.ledger.snapshot import SnapshotFold, bulk, digest, encode
from sync.protocol import PROTOCOL_VERSION

from . import schema

ALL = "all"
REGION = "region"
_KEEP = 3  # encoded snapshots kept per process
_CHUNK = 500  # ids per ``IN (...)``
_WRITE = 5000  # rows per insert batch
SAVE_EVERY = 10_000  # positions between two writes of a live fold (see ``SnapshotCache``)

log = logging.getLogger("sync.server.snapshots")


@dataclass
class _View:
    """The customers of one scope of a snapshot, encoded, and its digest."""

    ids: list[str]
    fragments: list[bytes]
    header: bytes
    digest: str


@dataclass
class _Snap:
    merchant_id: str
    seq: int
    heads: list[list[Any]]
    usage: list[Any]
    anonymous: list[Any]
    ids: list[str]
    fragments: list[bytes]
    homes: list[str | None]  # home till per customer (None: no enrolment seen)
    views: dict[str | None, _View] = field(default_factory=dict)

    def header(self, cursor: str) -> list[Any]:
        return [cursor, self.heads, self.usage, self.anonymous]

    def view(self, cursor: str, region: str | None, region_of: dict[str, str | None]) -> _View:
        """All customers (``region`` None) or those whose home till's region is ``region``."""
        known = self.views.get(region)
        if known is not None:
            return known
        if region is None:
            ids, fragments = self.ids, self.fragments
        else:
            keep = [
                i
                for i, home in enumerate(self.homes)
                if home is None or region_of.get(home) == region
            ]
            ids = [self.ids[i] for i in keep]
            fragments = [self.fragments[i] for i in keep]
        header = encode(self.header(cursor))
        view = _View(ids, fragments, header, digest(header, fragments))
        self.views[region] = view
        return view


@dataclass
class _Live:
    """A merchant's fold as of ``seq`` and every customer encoded as of then. ``saved``:
    the position this fold was last persisted at (-1: never, persist every customer);
    ``unsaved``: customers re-encoded since."""

    seq: int
    fold: SnapshotFold
    fragments: dict[str, bytes]
    saved: int = -1
    unsaved: set[str] = field(default_factory=set)


class SnapshotCache:
    """Folds and encoded snapshots, per process (thread-safe). Per merchant one live fold
    moves forward: a newer snapshot folds only the events after the last one and re-encodes
    only the customers they touched. The live fold is persisted in the server's database
    (``snapshot_state``, ``snapshot_customers``) when it moves forward (the first time, then
    every ``save_every`` positions), in the caller's transaction, so a new process continues
    from there instead of folding every event again (``persist=False``: memory only)."""

    def __init__(self, persist: bool = True, save_every: int = SAVE_EVERY) -> None:
        self._lock = threading.Lock()
        self._live: dict[str, _Live] = {}
        self._snaps: OrderedDict[tuple[str, int], _Snap] = OrderedDict()
        self.persist = persist
        # Persist the live fold when it moved at least this many positions since it was
        # last written (and always the first time): writing costs a merchant-wide blob.
        self.save_every = save_every

    def clear(self) -> None:
        """Forget what this process holds (as a restart does); the persisted fold stays."""
        with self._lock:
            self._live.clear()
            self._snaps.clear()

    def get(
        self,
        conn: Connection,
        merchant_id: str,
        seq: int,
        fold_events: Callable[[Connection, str, int, int, SnapshotFold], None],
    ) -> _Snap:
        with self._lock:
            snap = self._snaps.get((merchant_id, seq))
            if snap is not None:
                self._snaps.move_to_end((merchant_id, seq))
                return snap
            with bulk():
                live = self._live.get(merchant_id)
                keep = True
                if live is None:
                    live = self._resume(conn, merchant_id, seq)
                    self._live[merchant_id] = live
                elif live.seq > seq:
                    # An older position than the live one (a till resuming an older snapshot
                    # after the cache moved on): fold from the start up to it, aside.
                    live, keep = _Live(0, SnapshotFold(), {}), False
                fold_events(conn, merchant_id, live.seq, seq, live.fold)
                for cid in live.fold.take_dirty():
                    live.fragments[cid] = encode(live.fold.customer(cid))
                    live.unsaved.add(cid)
                live.seq = seq
                snap = _snapshot(conn, merchant_id, seq, live)
                if (
                    keep
                    and self.persist
                    and (live.saved < 0 or seq - live.saved >= self.save_every)
                ):
                    save(conn, merchant_id, live)
            self._snaps[(merchant_id, seq)] = snap
            while len(self._snaps) > _KEEP:
                self._snaps.popitem(last=False)
            return snap

    def _resume(self, conn: Connection, merchant_id: str, seq: int) -> _Live:
        """The persisted fold of the merchant if it is not newer than ``seq``, else a new
        fold from the start."""
        if self.persist:
            st = schema.snapshot_state
            row = conn.execute(
                select(st.c.seq, st.c.state).where(st.c.merchant_id == merchant_id)
            ).first()
            if row is not None and int(row.seq) <= seq:
                sc = schema.snapshot_customers
                fragments = {
                    r.customer_id: bytes(r.body)
                    for r in conn.execute(
                        select(sc.c.customer_id, sc.c.body).where(sc.c.merchant_id == merchant_id)
                    )
                }
                fold = SnapshotFold.resume(bytes(row.state), fragments)
                return _Live(int(row.seq), fold, fragments, saved=int(row.seq))
        return _Live(0, SnapshotFold(), {})


def save(conn: Connection, merchant_id: str, live: _Live) -> None:
    """Persist the live fold (its merchant-wide state and the customers re-encoded since it
    was last saved) unless the database holds it at this position or a newer one already
    (another server process). In a savepoint of the caller's transaction: if another process
    writes at the same moment (PostgreSQL refuses the row lock under REPEATABLE READ), this
    one gives way and tries again with its next snapshot."""
    st, sc = schema.snapshot_state, schema.snapshot_customers
    if live.saved >= live.seq:
        return
    try:
        with conn.begin_nested():
            row = conn.execute(
                select(st.c.seq).where(st.c.merchant_id == merchant_id).with_for_update()
            ).first()
            stored = None if row is None else int(row.seq)
            if stored is not None and stored >= live.seq:
                return
            if stored is not None and 0 <= live.saved <= stored:
                ids = sorted(live.unsaved)  # what changed since the stored position
                for i in range(0, len(ids), _CHUNK):
                    conn.execute(
                        delete(sc).where(
                            sc.c.merchant_id == merchant_id,
                            sc.c.customer_id.in_(ids[i : i + _CHUNK]),
                        )
                    )
            else:  # never saved by this fold, or the stored one is older than that
                conn.execute(delete(sc).where(sc.c.merchant_id == merchant_id))
                ids = sorted(live.fragments)
            fragments = live.fragments
            for i in range(0, len(ids), _WRITE):
                conn.execute(
                    insert(sc),
                    [
                        {"merchant_id": merchant_id, "customer_id": cid, "body": fragments[cid]}
                        for cid in ids[i : i + _WRITE]
                    ],
                )
            values = {
                "seq": live.seq,
                "state": live.fold.save_state(),
                "saved_at": datetime.now(UTC).isoformat(),
            }
            if row is None:
                conn.execute(insert(st).values(merchant_id=merchant_id, **values))
            else:
                conn.execute(update(st).where(st.c.merchant_id == merchant_id).values(**values))
    except DBAPIError as exc:  # a concurrent writer on PostgreSQL: let it have its way
        log.info("snapshot of %s not persisted this time: %s", merchant_id, exc.orig)
        return
    live.saved = live.seq
    live.unsaved.clear()


def _snapshot(conn: Connection, merchant_id: str, seq: int, live: _Live) -> _Snap:
    usage, anonymous = live.fold.merchant_wide()
    ids = sorted(live.fragments)
    fragments, home = live.fragments, live.fold.home
    return _Snap(
        merchant_id,
        seq,
        heads_at(conn, merchant_id, seq),
        usage,
        anonymous,
        ids,
        [fragments[cid] for cid in ids],
        [home.get(cid) for cid in ids],
    )


def heads_at(conn: Connection, merchant_id: str, seq: int) -> list[list[Any]]:
    """Every till's chain head at position ``seq``: its slot with the highest position
    (accepted slots are ``events`` rows, the others ``chain`` rows: s0005)."""
    slots = union_all(
        *(
            select(t.c.terminal_id, t.c.epoch, t.c.seq, t.c.hash, t.c.server_seq).where(
                t.c.merchant_id == merchant_id, t.c.server_seq <= seq
            )
            for t in (schema.events, schema.chain)
        )
    ).cte("slots")
    last = (
        select(slots.c.terminal_id, func.max(slots.c.server_seq).label("top"))
        .group_by(slots.c.terminal_id)
        .subquery()
    )
    rows = conn.execute(
        select(slots.c.terminal_id, slots.c.epoch, slots.c.seq, slots.c.hash)
        .join(
            last,
            (slots.c.terminal_id == last.c.terminal_id) & (slots.c.server_seq == last.c.top),
        )
        .order_by(slots.c.terminal_id)
    )
    return [[r.terminal_id, int(r.epoch), int(r.seq), bytes(r.hash).hex()] for r in rows]


def fold_events(
    conn: Connection, merchant_id: str, after: int, upto: int, fold: SnapshotFold
) -> None:
    """Fold the merchant's stored events with ``after < server_seq <= upto``, in order."""
    e = schema.events
    # yield_per for this statement only (``Connection.execution_options`` would turn every
    # later statement of the connection into a server-side cursor, a SAVEPOINT too).
    result = conn.execute(
        select(e.c.id, e.c.terminal_id, e.c.kind, e.c.at, e.c.customer_id, e.c.payload)
        .where(e.c.merchant_id == merchant_id, e.c.server_seq > after, e.c.server_seq <= upto)
        .order_by(e.c.server_seq),
        execution_options={"yield_per": 5000},
    )
    add = fold.add
    loads = json.loads
    for event_id, terminal_id, kind, at, customer_id, payload in result:
        add(event_id, terminal_id, kind, at, customer_id, loads(payload))


def regions(conn: Connection, merchant_id: str) -> dict[str, str | None]:
    """Region of every till of the merchant (its store's region)."""
    t, s = schema.terminals, schema.stores
    return {
        r.id: r.region
        for r in conn.execute(
            select(t.c.id, s.c.region)
            .join(s, s.c.id == t.c.store_id)
            .where(t.c.merchant_id == merchant_id)
        )
    }


def page_json(
    snap: _Snap,
    view: _View,
    cursor: str,
    scope: str,
    after: str | None,
    limit: int,
) -> bytes:
    """One ``BootstrapPage`` as JSON bytes, assembled from the encoded customers."""
    start = bisect_right(view.ids, after) if after is not None else 0
    end = min(len(view.ids), start + limit)
    head: dict[str, Any] = {
        "protocol": PROTOCOL_VERSION,
        "cursor": cursor,
        "scope": scope,
        "digest": view.digest,
        "total": len(view.ids),
        "next_after": view.ids[end - 1] if end < len(view.ids) else None,
    }
    if after is None:
        head.update(heads=snap.heads, usage=snap.usage, coupons=snap.anonymous)
    return encode(head)[:-1] + b',"customers":[' + b",".join(view.fragments[start:end]) + b"]}"
