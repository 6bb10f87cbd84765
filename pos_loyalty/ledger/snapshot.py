"""Snapshots: a till's projections as of one server position, and the baseline a
bootstrapped till keeps.

Both ends use this module: the server folds its events (``SnapshotFold``) into what a till
needs to serve customers without their history, the till loads it (``begin_baseline``,
``load_page``, ``finish_baseline``) and keeps it as its *baseline*, so that ``ledger verify``
and ``ledger rebuild`` are "baseline + the events after it".

The fold follows exactly what ``projections.rebuild_into`` does on a till for the same
events in the same order (``side_table_problem`` first, then ``apply_side_tables`` and the
postings through ``CustomerState``), minus receipts: a snapshot carries no history, so a
refund of a sale made before the snapshot cannot be matched on a bootstrapped till (it is
refused as for any unknown receipt). ``tests/sync/test_bootstrap.py`` checks the two agree.

Wire form of one customer (a JSON array, the unit of paging)::

    [customer_id, enrolled_at | null, profile | null,
     cards    [[code, status, issued_at, reason | null], ...],
     balances [[program, unit, balance], ...],
     lots     [[lot_id, program, earned_at, expires_at | null, remaining], ...],
     coupons  [[serial, program, code, issued_at, expires_at], ...],
     referrals [code, ...]]

The snapshot's *header* is ``[cursor, heads, usage, coupons without a customer]`` with
``heads = [[terminal_id, epoch, seq, hash hex], ...]`` (every till's chain head at the
cursor) and ``usage = [[key, count], ...]``. Its digest (``digest``) is SHA-256 over
``DIGEST_PREFIX``, the encoded header, a newline and the encoded customers in id order joined
by commas: the server computes it when it builds the snapshot, the till recomputes it from
the pages it stored (at the end of the bootstrap and in ``ledger verify``).
"""

from __future__ import annotations

import gc
import hashlib
import json
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from pos_loyalty.domain.events import Event, Kind, Posting
from pos_loyalty.domain.state import CustomerState, Lot, PointsAccount

from . import schema
from .projections import insert_lots, raw_connection, state_of_balances

DIGEST_PREFIX = b"pos-loyalty snapshot 1\n"

LOADING = "loading"
COMPLETE = "complete"

# -- encoding ---------------------------------------------------------------------------------


@contextmanager
def bulk() -> Iterator[None]:
    """Python's cyclic garbage collector paused for a bulk step (a fold, a page load): they
    allocate hundreds of thousands of acyclic objects, and each collection would scan every
    live object of the process again (measured: two thirds of a bootstrap's time in a
    process that holds a large fold). Reference counting still frees everything."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode(value: Any) -> bytes:
    """Compact JSON of a wire value (lists, strings, ints, None): the bytes the digest covers.
    A tuple encodes like a list, so a value parsed back from the wire encodes the same."""
    return _ENCODER.encode(value).encode()


def digest(header: bytes, parts: Iterable[bytes]) -> str:
    """SHA-256 of a snapshot: ``DIGEST_PREFIX``, the encoded header, a newline, then every
    customer's encoding in id order separated by commas. ``parts`` are encoded customers or
    runs of them already joined by commas (a page: its list's encoding without the
    brackets), so the digest does not depend on how the snapshot was paged."""
    h = hashlib.sha256(DIGEST_PREFIX)
    h.update(header)
    h.update(b"\n")
    first = True
    for part in parts:
        if not part:
            continue
        if not first:
            h.update(b",")
        h.update(part)
        first = False
    return h.hexdigest()


def page_part(customers: Sequence[Sequence[Any]]) -> bytes:
    """The customers of one page as one digest part (one encoder call for the page)."""
    return encode(list(customers))[1:-1]


# -- the fold (server side) --------------------------------------------------------------------

_ENROLLED = Kind.CUSTOMER_ENROLLED.value
_CARD_ISSUED = Kind.CARD_ISSUED.value
_CARD_BLOCKED = Kind.CARD_BLOCKED.value
_SALE = Kind.SALE_COMMITTED.value
_REFUND = Kind.REFUND_COMMITTED.value


class SnapshotFold:
    """The projections a till would hold after ``add``-ing these events in this order."""

    def __init__(self) -> None:
        self.customers: dict[str, tuple[str, str]] = {}  # id -> (enrolled_at, profile)
        self.home: dict[str, str] = {}  # customer id -> the till that enrolled them
        self.cards: dict[str, list[Any]] = {}  # code -> [customer, status, issued_at, reason]
        self.receipts: set[str] = set()  # receipt keys ("sale:<id>", "refund:<id>")
        self.usage: dict[str, int] = {}
        self.coupons: dict[str, tuple[str, str | None, str, str, str]] = {}
        self.referrals: dict[str, str] = {}  # code -> customer
        self.states: dict[str, CustomerState] = {}
        self.events = 0
        # Per customer, for exporting one customer at a time; ``dirty``: customers changed
        # since ``take_dirty`` (the server re-encodes only those for a newer snapshot).
        self.ids: set[str] = set()  # customers with at least one row
        self.dirty: set[str] = set()
        self._cards_of: dict[str, list[str]] = {}
        self._coupons_of: dict[str, list[str]] = {}
        self._referrals_of: dict[str, list[str]] = {}
        # Customers not read back yet from a persisted fold (``resume``): id -> wire form.
        self._pending: dict[str, bytes] = {}

    # -- persisted form: the server keeps its fold in its database -------------------------

    def save_state(self) -> bytes:
        """Everything the fold holds except what the encoded customers carry (profile and
        balances/lots per customer), compressed: ``resume(save_state(), {id: encoded
        customer})`` continues exactly where this fold is. Cards, coupons and referral codes
        are kept whole (they are checked across customers: a code issued twice)."""
        value = [
            1,
            self.events,
            self.usage,
            {k: list(v) for k, v in self.coupons.items()},
            self.referrals,
            self.cards,
            sorted(self.receipts),
            self.home,
        ]
        return zlib.compress(encode(value), 1)

    @classmethod
    def resume(cls, state: bytes, customers: Mapping[str, bytes]) -> SnapshotFold:
        """A fold continued from ``save_state`` and the encoded customers (``customer``) of
        the same moment. Customers are read back lazily, when an event touches them."""
        version, events, usage, coupons, referrals, cards, receipts, home = json.loads(
            zlib.decompress(state)
        )
        if version != 1:
            raise ValueError(f"unknown persisted fold format {version!r}")
        fold = cls()
        fold.events = events
        fold.usage = usage
        fold.coupons = {k: tuple(v) for k, v in coupons.items()}
        fold.referrals = referrals
        fold.cards = cards
        fold.receipts = set(receipts)
        fold.home = home
        for code, card in cards.items():
            if card[0] is not None:
                fold._cards_of.setdefault(card[0], []).append(code)
        for serial, coupon in fold.coupons.items():
            if coupon[1] is not None:
                fold._coupons_of.setdefault(coupon[1], []).append(serial)
        for code, cid in referrals.items():
            fold._referrals_of.setdefault(cid, []).append(code)
        fold.ids = set(customers)
        fold._pending = dict(customers)
        return fold

    def _hydrate(self, cid: str) -> None:
        """Read one customer back from its encoded form, as ``projections.load_state``
        reads a till's tables: balances make the accounts, lots go into them."""
        raw = self._pending.pop(cid)
        _cid, enrolled_at, profile, _cards, balances, lots, _coupons, _refs = json.loads(raw)
        if enrolled_at is not None:
            self.customers[cid] = (enrolled_at, profile)
        if not balances:
            return  # no posting ever: the full fold holds no state for them either
        state = self.states[cid] = state_of_balances(cid, balances)
        accounts = state.all_accounts()
        for lot_id, program, earned_at, expires_at, remaining in lots:
            account = accounts.get(program)
            if account is None:
                account = accounts[program] = state.points.setdefault(program, PointsAccount())
            account.lots[lot_id] = Lot(
                lot_id,
                datetime.fromisoformat(earned_at),
                datetime.fromisoformat(expires_at) if expires_at else None,
                remaining,
            )

    def add(
        self,
        event_id: str,
        terminal_id: str,
        kind: str,
        at: str,
        customer_id: str | None,
        payload: Mapping[str, Any],
    ) -> None:
        """Fold one stored event (``payload`` is its decoded ``{"p": ..., "d": ...}``)."""
        self.events += 1
        if customer_id is not None:
            self.dirty.add(customer_id)
            if customer_id in self._pending:
                self._hydrate(customer_id)
        when = datetime.fromisoformat(at)
        data: Mapping[str, Any] = payload["d"]
        if not self._problem(kind, customer_id, data):
            self._side_tables(terminal_id, kind, when.isoformat(), customer_id, data)
        else:
            self._shared(customer_id, when.isoformat(), data)  # ``projections.apply_shared``
        postings = payload["p"]
        if customer_id is not None and postings:
            state = self.states.get(customer_id)
            if state is None:
                state = self.states[customer_id] = CustomerState(customer_id)
                self.ids.add(customer_id)
            state.apply(
                Event(
                    event_id,
                    Kind(kind),
                    terminal_id,
                    when,
                    customer_id,
                    postings=tuple(Posting.from_json(p) for p in postings),
                )
            )

    def _problem(self, kind: str, customer_id: str | None, data: Mapping[str, Any]) -> bool:
        """``projections.side_table_problem`` on the fold's own tables."""
        if kind == _SALE:
            return f"sale:{data.get('receipt_id')}" in self.receipts
        if kind == _REFUND:
            return (
                f"sale:{data.get('receipt_id')}" not in self.receipts
                or f"refund:{data.get('refund_id')}" in self.receipts
            )
        if kind == _CARD_ISSUED:
            return data.get("code") in self.cards
        if kind == _ENROLLED:
            return customer_id in self.customers
        return False

    def _shared(self, customer_id: str | None, at: str, data: Mapping[str, Any]) -> None:
        """Use counters and issued coupons: taken from every event, whatever its problem."""
        uses = data.get("uses")
        for key, count in sorted(uses.items()) if uses else ():
            if count:
                self.usage[key] = self.usage.get(key, 0) + int(count)
        for coupon in data.get("coupons") or ():
            serial = coupon["serial"]
            if serial not in self.coupons:
                self.coupons[serial] = (
                    coupon["program"],
                    customer_id,
                    coupon["code"],
                    at,
                    coupon["expires_at"],
                )
                if customer_id is not None:
                    self._coupons_of.setdefault(customer_id, []).append(serial)
                    self.ids.add(customer_id)

    def _side_tables(
        self,
        terminal_id: str,
        kind: str,
        at: str,
        customer_id: str | None,
        data: Mapping[str, Any],
    ) -> None:
        """``projections.apply_side_tables`` (receipts kept as keys only)."""
        self._shared(customer_id, at, data)
        if kind == _ENROLLED:
            cid = str(customer_id)
            code = data.get("referral_code")
            if code and code not in self.referrals:
                self.referrals[code] = cid
                self._referrals_of.setdefault(cid, []).append(code)
            self.customers[cid] = (at, json.dumps(data.get("profile", {}), sort_keys=True))
            self.home[cid] = terminal_id
            self.ids.add(cid)
        elif kind == _CARD_ISSUED:
            self.cards[data["code"]] = [customer_id, "active", at, None]
            if customer_id is not None:
                self._cards_of.setdefault(customer_id, []).append(data["code"])
                self.ids.add(customer_id)
        elif kind == _CARD_BLOCKED:
            card = self.cards.get(data["code"])
            if card is not None:
                card[1], card[3] = "blocked", data.get("reason")
                if card[0] is not None:
                    self.dirty.add(card[0])
                    if card[0] in self._pending:
                        self._hydrate(card[0])
        elif kind == _SALE:
            self.receipts.add(f"sale:{data['receipt_id']}")
        elif kind == _REFUND:
            self.receipts.add(f"refund:{data['refund_id']}")

    def customer(self, cid: str) -> list[Any]:
        """One customer in wire form (see the module docstring)."""
        if cid in self._pending:
            self._hydrate(cid)
        enrolled_at, profile = self.customers.get(cid, (None, None))
        cards = [[code, *self.cards[code][1:]] for code in sorted(self._cards_of.get(cid, ()))]
        state = self.states.get(cid)
        balances: list[Any] = []
        lots: list[Any] = []
        if state is not None:
            balances = [[p, u.value, v] for (p, u), v in sorted(state.balances().items())]
            lots = sorted(
                [
                    lot.lot_id,
                    program,
                    lot.earned_at.isoformat(),
                    lot.expires_at.isoformat() if lot.expires_at else None,
                    lot.remaining,
                ]
                for program, account in state.all_accounts().items()
                for lot in account.lots.values()
            )
        coupons = [
            [serial, program, code, issued_at, expires_at]
            for serial in sorted(self._coupons_of.get(cid, ()))
            for program, _owner, code, issued_at, expires_at in (self.coupons[serial],)
        ]
        referrals = sorted(self._referrals_of.get(cid, ()))
        return [cid, enrolled_at, profile, cards, balances, lots, coupons, referrals]

    def merchant_wide(self) -> tuple[list[Any], list[Any]]:
        """``(usage rows, coupons issued without a customer)``."""
        usage = [[key, count] for key, count in sorted(self.usage.items())]
        anonymous = [
            [serial, program, code, issued_at, expires_at]
            for serial, (program, owner, code, issued_at, expires_at) in sorted(
                self.coupons.items()
            )
            if owner is None
        ]
        return usage, anonymous

    def take_dirty(self) -> set[str]:
        """Customers (with rows) changed since the last call."""
        dirty, self.dirty = self.dirty & self.ids, set()
        return dirty

    def export(self) -> tuple[list[Any], list[Any], dict[str, list[Any]]]:
        """``(usage rows, coupons without a customer, {customer id: wire customer})``."""
        usage, anonymous = self.merchant_wide()
        return usage, anonymous, {cid: self.customer(cid) for cid in self.ids}


# -- the baseline (till side) ------------------------------------------------------------------


class BootstrapRefused(Exception):
    """The ledger cannot take a snapshot (it holds data already); nothing was changed."""


@dataclass(frozen=True)
class Baseline:
    status: str  # loading | complete
    cursor: str
    scope: str  # all | region
    digest: str  # the server's digest of the whole snapshot
    next_after: str | None  # loading: the customer id to continue after
    pages: int
    customers: int
    total: int  # customers the server announced
    started_at: str
    completed_at: str | None


def _now() -> str:
    return datetime.now(UTC).isoformat()


def baseline(conn: Connection) -> Baseline | None:
    row = conn.execute(select(schema.baseline).where(schema.baseline.c.id == 1)).first()
    if row is None:
        return None
    return Baseline(
        row.status,
        row.cursor,
        row.scope,
        row.digest,
        row.next_after,
        row.pages,
        row.customers,
        row.total,
        row.started_at,
        row.completed_at,
    )


def emptiness_problem(conn: Connection) -> str | None:
    """Why this ledger may not be bootstrapped (it holds something already), or None."""
    for table, what in (
        (schema.events, "events"),
        (schema.customers, "customers"),
        (schema.cards, "cards"),
        (schema.balances, "balances"),
        (schema.coupons, "coupons"),
        (schema.usage, "usage counters"),
        (schema.chain_stubs, "chain stubs"),
    ):
        n = conn.execute(select(func.count()).select_from(table)).scalar_one()
        if n:
            return f"the ledger already holds {n} {what}"
    row = conn.execute(
        select(schema.sync_state.c.cursor).where(schema.sync_state.c.id == 1)
    ).first()
    if row is not None and row.cursor:
        return "the ledger has pulled from the server already"
    return None


def begin_baseline(
    conn: Connection, header: Sequence[Any], digest_hex: str, scope: str, total: int
) -> None:
    """Start a bootstrap: record the snapshot's header and load its merchant-wide rows
    (usage counters, coupons without a customer). Refused unless the ledger is empty."""
    known = baseline(conn)
    if known is not None:
        raise BootstrapRefused(
            "this ledger was bootstrapped already"
            if known.status == COMPLETE
            else "a bootstrap of this ledger is in progress: resume it"
        )
    problem = emptiness_problem(conn)
    if problem is not None:
        raise BootstrapRefused(f"{problem}: only an empty ledger can start from a snapshot")
    cursor, _heads, usage, anonymous = header
    conn.execute(
        insert(schema.baseline).values(
            id=1,
            status=LOADING,
            cursor=cursor,
            scope=scope,
            digest=digest_hex,
            header=zlib.compress(encode(list(header))),
            next_after=None,
            pages=0,
            customers=0,
            total=total,
            started_at=_now(),
            completed_at=None,
        )
    )
    raw = raw_connection(conn)
    raw.executemany("INSERT INTO usage (key, count) VALUES (?, ?)", [tuple(u) for u in usage])
    raw.executemany(
        "INSERT INTO coupons (serial, program, customer_id, code, issued_at, expires_at) "
        "VALUES (?, ?, NULL, ?, ?, ?)",
        [tuple(c) for c in anonymous],
    )


def _rows(customers: Sequence[Sequence[Any]]) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {
        "customers": [],
        "cards": [],
        "balances": [],
        "lots": [],
        "coupons": [],
        "referrals": [],
    }
    for cid, enrolled_at, profile, cards, balances, lots, coupons, referrals in customers:
        if enrolled_at is not None:
            out["customers"].append((cid, enrolled_at, profile))
        out["cards"].extend((code, cid, status, at, reason) for code, status, at, reason in cards)
        out["balances"].extend((cid, program, unit, value) for program, unit, value in balances)
        out["lots"].extend(
            (lot_id, cid, program, earned, expires, left)
            for lot_id, program, earned, expires, left in lots
        )
        out["coupons"].extend(
            (serial, program, cid, code, issued, expires)
            for serial, program, code, issued, expires in coupons
        )
        out["referrals"].extend((code, cid) for code in referrals)
    return out


def insert_customers(conn: Connection, customers: Sequence[Sequence[Any]]) -> None:
    """Write wire customers into the projection tables (bulk)."""
    rows = _rows(customers)
    raw = raw_connection(conn)
    raw.executemany(
        "INSERT INTO customers (customer_id, enrolled_at, profile) VALUES (?, ?, ?)",
        rows["customers"],
    )
    raw.executemany(
        "INSERT INTO cards (code, customer_id, status, issued_at, reason) VALUES (?, ?, ?, ?, ?)",
        rows["cards"],
    )
    raw.executemany(
        "INSERT INTO balances (customer_id, program, unit, balance) VALUES (?, ?, ?, ?)",
        rows["balances"],
    )
    insert_lots(raw, rows["lots"])
    raw.executemany(
        "INSERT INTO coupons (serial, program, customer_id, code, issued_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        rows["coupons"],
    )
    raw.executemany("INSERT INTO referrals (code, customer_id) VALUES (?, ?)", rows["referrals"])


def load_page(
    conn: Connection, customers: Sequence[Sequence[Any]], next_after: str | None
) -> Baseline:
    """Load one page of wire customers and keep it (compressed) as part of the baseline;
    one call per page, in the caller's transaction."""
    known = baseline(conn)
    if known is None or known.status != LOADING:
        raise BootstrapRefused("no bootstrap in progress")
    if customers and known.next_after is not None and str(customers[0][0]) <= known.next_after:
        raise ValueError("snapshot page out of order")
    insert_customers(conn, customers)
    page = known.pages + 1
    body = zlib.compress(page_part(customers), 1)
    conn.execute(insert(schema.baseline_pages).values(page=page, body=body, rows=len(customers)))
    conn.execute(
        update(schema.baseline)
        .where(schema.baseline.c.id == 1)
        .values(
            pages=page,
            customers=known.customers + len(customers),
            next_after=str(customers[-1][0]) if customers else known.next_after,
        )
    )
    return baseline(conn)  # type: ignore[return-value]


def stored_header(conn: Connection) -> list[Any]:
    row = conn.execute(select(schema.baseline.c.header).where(schema.baseline.c.id == 1)).one()
    value: list[Any] = json.loads(zlib.decompress(bytes(row.header)))
    return value


def stored_pages(conn: Connection) -> Iterable[bytes]:
    """Every stored page as a digest part (``page_part``), in page order."""
    for row in conn.execute(
        select(schema.baseline_pages.c.body).order_by(schema.baseline_pages.c.page)
    ):
        yield zlib.decompress(bytes(row.body))


def stored_digest(conn: Connection) -> str:
    """The digest of the baseline as stored now (equal to the server's unless edited)."""
    return digest(encode(stored_header(conn)), stored_pages(conn))


def finish_baseline(conn: Connection, terminal_id: str) -> Baseline:
    """The last page is in: check the digest of everything stored against the server's,
    set the chain heads and the pull cursor, mark the baseline complete."""
    known = baseline(conn)
    if known is None or known.status != LOADING:
        raise BootstrapRefused("no bootstrap in progress")
    got = stored_digest(conn)
    if got != known.digest:
        raise ValueError(
            f"the snapshot as received does not match the server's digest ({got[:12]}… ≠ "
            f"{known.digest[:12]}…): not used"
        )
    cursor, heads, _usage, _anon = stored_header(conn)
    for tid, epoch, seq, digest_hex in heads:
        if tid == terminal_id:
            own = conn.execute(select(schema.heads).where(schema.heads.c.terminal_id == tid))
            if own.first() is not None:
                raise BootstrapRefused(
                    f"the server holds this till's chain up to seq {seq}, but this ledger "
                    "recorded events of its own while the snapshot was loading: start again "
                    "with an empty ledger and do not sell before the bootstrap is complete"
                )
            # This till's own chain as the server holds it (a till re-paired after its ledger
            # was lost): continue it instead of restarting at seq 1.
            conn.execute(
                insert(schema.heads).values(
                    terminal_id=tid, seq=seq, hash=bytes.fromhex(digest_hex)
                )
            )
            _save_sync_state(conn, cursor=cursor, acked_seq=seq, epoch=epoch)
            break
    else:
        _save_sync_state(conn, cursor=cursor)
    conn.execute(
        update(schema.baseline)
        .where(schema.baseline.c.id == 1)
        .values(status=COMPLETE, next_after=None, completed_at=_now())
    )
    return baseline(conn)  # type: ignore[return-value]


def _save_sync_state(conn: Connection, **values: Any) -> None:
    done = conn.execute(
        update(schema.sync_state).where(schema.sync_state.c.id == 1).values(**values)
    ).rowcount
    if not done:
        conn.execute(
            insert(schema.sync_state).values(**{"id": 1, "epoch": 1, "acked_seq": 0, **values})
        )


def discard_baseline(conn: Connection) -> None:
    """Undo an unfinished bootstrap (everything it loaded), so it can start again. Only while
    the ledger holds no events: the loaded rows are then exactly what the bootstrap wrote."""
    known = baseline(conn)
    if known is None:
        return
    if known.status != LOADING:
        raise BootstrapRefused("the bootstrap is complete; it cannot be discarded")
    n = conn.execute(select(func.count()).select_from(schema.events)).scalar_one()
    if n:
        raise BootstrapRefused(
            f"the ledger recorded {n} events during the bootstrap: resume it instead"
        )
    for table in (
        schema.customers,
        schema.cards,
        schema.balances,
        schema.lots,
        schema.coupons,
        schema.referrals,
        schema.usage,
        schema.baseline_pages,
        schema.baseline,
    ):
        conn.execute(delete(table))


def baseline_heads(conn: Connection) -> dict[str, tuple[int, bytes]]:
    """Every till's chain head at the snapshot (``{}`` without a complete baseline)."""
    known = baseline(conn)
    if known is None or known.status != COMPLETE:
        return {}
    _cursor, heads, _usage, _anon = stored_header(conn)
    return {tid: (int(seq), bytes.fromhex(h)) for tid, _epoch, seq, h in heads}


def load_baseline_into(conn: Connection, header: Sequence[Any], pages: Iterable[bytes]) -> None:
    """Write a stored baseline (``stored_header``, ``stored_pages``) into the empty
    projection tables of ``conn`` (a scratch copy for verify, or the ledger for rebuild)."""
    _cursor, _heads, usage, anonymous = header
    raw = raw_connection(conn)
    raw.executemany("INSERT INTO usage (key, count) VALUES (?, ?)", [tuple(u) for u in usage])
    raw.executemany(
        "INSERT INTO coupons (serial, program, customer_id, code, issued_at, expires_at) "
        "VALUES (?, ?, NULL, ?, ?, ?)",
        [tuple(c) for c in anonymous],
    )
    for part in pages:
        insert_customers(conn, json.loads(b"[" + part + b"]"))
