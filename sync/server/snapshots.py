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
cached one), and the encoded snapshot per (merchant, cursor, region), a few at a time. A
request for an older cursor than the cached fold (a resume after the cache moved on) folds
from scratch up to it.

Region scope: a customer's home store is the store of the till that enrolled them; a till
asking for ``scope=region`` gets only the customers whose home store is in its own store's
region (customers with no enrolment on the server are served to every region).
"""

from __future__ import annotations

import json
import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, select

from pos_loyalty.ledger.snapshot import SnapshotFold, bulk, digest, encode
from sync.protocol import PROTOCOL_VERSION

from . import schema

ALL = "all"
REGION = "region"
_KEEP = 3  # encoded snapshots kept per process


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
    """A merchant's fold as of ``seq`` and every customer encoded as of then."""

    seq: int
    fold: SnapshotFold
    fragments: dict[str, bytes]


class SnapshotCache:
    """Folds and encoded snapshots, per process (thread-safe). Per merchant one live fold
    moves forward: a newer snapshot folds only the events after the last one and re-encodes
    only the customers they touched."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[str, _Live] = {}
        self._snaps: OrderedDict[tuple[str, int], _Snap] = OrderedDict()

    def clear(self) -> None:
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
            live = self._live.get(merchant_id)
            if live is None or live.seq > seq:
                # No fold yet, or an older position than the live one (a till resuming an
                # older snapshot after the cache moved on): fold from the start up to it.
                fresh = _Live(0, SnapshotFold(), {})
                if live is None:
                    self._live[merchant_id] = fresh
                live = fresh
            with bulk():
                fold_events(conn, merchant_id, live.seq, seq, live.fold)
                for cid in live.fold.take_dirty():
                    live.fragments[cid] = encode(live.fold.customer(cid))
                live.seq = seq
                snap = _snapshot(conn, merchant_id, seq, live)
            self._snaps[(merchant_id, seq)] = snap
            while len(self._snaps) > _KEEP:
                self._snaps.popitem(last=False)
            return snap


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
    """Every till's chain head at position ``seq``: its slot with the highest position."""
    c = schema.chain
    last = (
        select(c.c.terminal_id, func.max(c.c.server_seq).label("top"))
        .where(c.c.merchant_id == merchant_id, c.c.server_seq <= seq)
        .group_by(c.c.terminal_id)
        .subquery()
    )
    rows = conn.execute(
        select(c.c.terminal_id, c.c.epoch, c.c.seq, c.c.hash)
        .join(last, (c.c.terminal_id == last.c.terminal_id) & (c.c.server_seq == last.c.top))
        .where(c.c.merchant_id == merchant_id)
        .order_by(c.c.terminal_id)
    )
    return [[r.terminal_id, int(r.epoch), int(r.seq), bytes(r.hash).hex()] for r in rows]


def fold_events(
    conn: Connection, merchant_id: str, after: int, upto: int, fold: SnapshotFold
) -> None:
    """Fold the merchant's stored events with ``after < server_seq <= upto``, in order."""
    e = schema.events
    result = conn.execution_options(yield_per=5000).execute(
        select(e.c.id, e.c.terminal_id, e.c.kind, e.c.at, e.c.customer_id, e.c.payload)
        .where(e.c.merchant_id == merchant_id, e.c.server_seq > after, e.c.server_seq <= upto)
        .order_by(e.c.server_seq)
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
