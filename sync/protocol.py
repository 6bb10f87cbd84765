"""The sync wire protocol, shared by the till (``sync.client``) and the server (``sync.server``).

Versioned: every request and answer carries ``protocol``; the server refuses versions it does
not speak (``426 protocol_unsupported``). Additive changes keep the version; anything else
bumps it.

A pushed event is exactly what the till stored: the row of its ``events`` table (id,
terminal_id, seq, kind, at, customer_id, key, payload as canonical JSON text, prev_hash and
hash as hex). The server re-computes the hash from these fields, so a batch that was altered
in transit, or a till that edited its ledger, is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from enum import Enum
from typing import Annotated, Any

import jiter
import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from pos_loyalty.domain.events import Event, Kind, Unit
from pos_loyalty.ledger.codec import chain_hash, event_from_row

PROTOCOL_VERSION = 1
MAX_BATCH = 1000  # events per push
MAX_PAGE = 5000  # events per pull page
MAX_SNAPSHOT_PAGE = 50_000  # customers per bootstrap page

Hex32 = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]
# A terminal, store, merchant or region id: the rule of a till's ``terminal.id``
# (``pos_loyalty.config.Ident``), so that every id the server registers is one a till can have.
IDENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
Ident = Annotated[StrictStr, Field(pattern=IDENT_PATTERN)]
Text = Annotated[StrictStr, Field(max_length=128)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WireEvent(_Model):
    """One event as the till stored it."""

    id: Annotated[StrictStr, Field(min_length=1, max_length=36)]
    terminal_id: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    seq: Annotated[StrictInt, Field(ge=1)]
    kind: Annotated[StrictStr, Field(min_length=1, max_length=32)]
    at: Annotated[StrictStr, Field(min_length=1, max_length=40)]
    customer_id: Annotated[StrictStr, Field(max_length=36)] | None = None
    key: Text | None = None
    payload: Annotated[StrictStr, Field(max_length=200_000)]
    prev_hash: Hex32
    hash: Hex32

    @staticmethod
    def from_row(row: Any) -> WireEvent:
        return WireEvent(
            id=row.id,
            terminal_id=row.terminal_id,
            seq=row.seq,
            kind=row.kind,
            at=row.at,
            customer_id=row.customer_id,
            key=row.key,
            payload=row.payload,
            prev_hash=bytes(row.prev_hash).hex(),
            hash=bytes(row.hash).hex(),
        )

    def to_event(self) -> Event:
        """The domain event (raises ValueError/KeyError/TypeError when it does not decode)."""
        return event_from_row(self)

    def hash_ok(self) -> bool:
        """Whether ``hash`` is the chain hash of this content after ``prev_hash``."""
        return self.checked_payload() is not None

    def checked_payload(self) -> Any:
        """The decoded payload when ``hash`` is the chain hash of this content after
        ``prev_hash`` (the payload is decoded once where it can be), else None."""
        try:
            payload = _loads_lossless(self.payload)
        except ValueError:  # jiter refuses some texts json takes (lone surrogates, depth)
            payload = None
        if payload is not None and _fast_hash_ok(self, payload):
            return payload
        # Not proven: floats (``LosslessFloat`` stops orjson), integers beyond 64 bits, lone
        # surrogates, or a wrong hash. The reference check decides, on json's decoding.
        try:
            payload = json.loads(self.payload)
        except ValueError:
            return None
        return self._checked_slow(payload)

    def _checked_slow(self, payload: Any) -> Any:
        """The reference check: decode to the domain event, re-encode, hash."""
        if type(payload) is not dict or len(payload) != 2:
            return None  # anything besides "p" and "d" would not be covered by the hash
        try:
            ev = Event.from_body(
                {
                    "id": self.id,
                    "kind": self.kind,
                    "terminal_id": self.terminal_id,
                    "at": self.at,
                    "customer_id": self.customer_id,
                    "key": self.key,
                    "postings": payload["p"],
                    "data": payload["d"],
                },
                seq=self.seq,
            )
            # A lone surrogate (a valid JSON escape) has no UTF-8 form: UnicodeEncodeError.
            digest = chain_hash(bytes.fromhex(self.prev_hash), ev).hex()
        except (ValueError, KeyError, TypeError):
            return None
        if digest != self.hash:
            return None
        return payload


_KINDS = frozenset(k.value for k in Kind)
_UNITS = frozenset(u.value for u in Unit)
_POSTING_KEYS = frozenset({"program", "unit", "delta", "lot", "expires_at"})


def _loads_lossless(text: str) -> Any:
    """The payload decoded by jiter, with every number that is not an integer as a
    ``jiter.LosslessFloat``: orjson refuses to encode one (``TypeError``), so a payload with
    a float can never pass the fast check (orjson formats floats unlike ``json``: ``1e-7``
    for ``1e-07``). Raises ValueError where jiter refuses the text; it refuses some that json
    takes (lone surrogates, deep nesting) and takes none that json refuses
    (``tests/sync/test_protocol.py``); those go to the reference check. ~5 µs for a 1 KB sale
    against ~9 µs with ``json.loads`` and its no-float hooks."""
    return jiter.from_json(text.encode(), float_mode="lossless-float", cache_mode="keys")


def canonical_fast(value: Any) -> bytes:
    """``codec.canonical(value)`` for a value decoded by ``_loads_lossless`` (str keys;
    str, int, bool, None, list, dict), ~10× faster. Raises ``TypeError``
    (``orjson.JSONEncodeError``) where orjson cannot encode the value as ``json`` would
    (integers beyond 64 bits, lone surrogates, a ``jiter.LosslessFloat``); callers then take
    the reference path.
    ``tests/sync/test_protocol.py`` property-tests the equality. Used for the server's
    per-event hash check only (``checked_payload`` of a 3-line sale: 22 → 13 µs)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _iso_identity(value: Any) -> bool:
    """Whether ``value`` is an ISO timestamp that ``datetime`` re-formats unchanged."""
    return type(value) is str and datetime.fromisoformat(value).isoformat() == value


def _fast_hash_ok(ev: WireEvent, payload: Any) -> bool:
    """True when ``ev.hash`` is proven right without building the domain event: the wire
    fields are already in the exact form ``Event.from_body(...).body()`` would give back
    (every check below is a condition for that round trip to be the identity), so their
    canonical encoding is the one the chain hash covers. False means "not proven": the
    caller runs the reference check, which decides."""
    try:
        if type(payload) is not dict or len(payload) != 2:
            return False
        postings, data = payload["p"], payload["d"]
        if type(postings) is not list or type(data) is not dict or ev.kind not in _KINDS:
            return False
        if not _iso_identity(ev.at):
            return False
        for p in postings:
            if (
                type(p) is not dict
                or not _POSTING_KEYS.issuperset(p)
                or type(p["program"]) is not str
                or type(p["unit"]) is not str
                or p["unit"] not in _UNITS
                or type(p["delta"]) is not int
                or ("lot" in p and p["lot"] is None)
                or ("expires_at" in p and not _iso_identity(p["expires_at"]))
            ):
                return False
        body = {
            "id": ev.id,
            "kind": ev.kind,
            "terminal_id": ev.terminal_id,
            "at": ev.at,
            "customer_id": ev.customer_id,
            "key": ev.key,
            "postings": postings,
            "data": data,
            "seq": ev.seq,
        }
        digest = hashlib.sha256(bytes.fromhex(ev.prev_hash) + canonical_fast(body)).hexdigest()
    except (ValueError, KeyError, TypeError):
        return False
    return digest == ev.hash


class Status(str, Enum):
    ACCEPTED = "accepted"  # new: stored, given a server sequence
    DUPLICATE = "duplicate"  # the server already had this event (a resend): nothing changed
    CONFLICT = "conflict"  # refused for this reason; recorded on the server for an operator


class EventResult(_Model):
    id: StrictStr
    seq: StrictInt
    status: Status
    reason: StrictStr | None = None
    message: StrictStr | None = None
    server_seq: StrictInt | None = None
    # For a derived-id expiry another till recorded first: the postings the server counts.
    # The pushing till books the difference locally (``ledger.replication``).
    winner_payload: StrictStr | None = None


class PushRequest(_Model):
    protocol: StrictInt = PROTOCOL_VERSION
    terminal_id: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    events: Annotated[list[WireEvent], Field(min_length=1, max_length=MAX_BATCH)]


class ChainHead(_Model):
    epoch: StrictInt
    seq: StrictInt
    hash: Hex32


class PushResponse(_Model):
    protocol: StrictInt = PROTOCOL_VERSION
    results: list[EventResult]
    head: ChainHead


class PulledEvent(_Model):
    server_seq: StrictInt
    event: WireEvent


class ChainStub(_Model):
    """A chain slot whose event is not served (a superseded expiry copy, a local-only
    reconciliation, a quarantined fork): enough for a replica to check the chain links."""

    terminal_id: StrictStr
    seq: StrictInt
    id: StrictStr
    prev_hash: Hex32
    hash: Hex32


class PullResponse(_Model):
    protocol: StrictInt = PROTOCOL_VERSION
    events: list[PulledEvent]
    stubs: list[ChainStub] = []
    cursor: StrictStr  # opaque: pass it back as ``after``
    more: bool
    # Additive: the head of the asking till's own chain as the server holds it. Behind what
    # the till has acknowledged, the server lost events (restored from a backup): the till
    # rewinds its acknowledged mark and pushes them again. None from an older server.
    head: ChainHead | None = None


class CustomerBalance(_Model):
    customer_id: StrictStr
    program: StrictStr
    unit: StrictStr
    balance: StrictInt
    overdraft: bool = False


class SnapshotPage(_Model):
    """Balances as the server folded them up to ``cursor`` (bootstrap, reporting)."""

    protocol: StrictInt = PROTOCOL_VERSION
    cursor: StrictStr
    balances: list[CustomerBalance]
    next_after: StrictStr | None  # customer id to continue after, None at the end


# A snapshot customer on the wire (``pos_loyalty.ledger.snapshot``): arrays, so that a page of
# thousands of customers is validated quickly.
WireCard = tuple[StrictStr, StrictStr, StrictStr, StrictStr | None]  # code, status, issued, reason
WireBalance = tuple[StrictStr, StrictStr, StrictInt]  # program, unit, balance
# lot id, program, earned_at, expires_at, remaining
WireLot = tuple[StrictStr, StrictStr, StrictStr, StrictStr | None, StrictInt]
WireCoupon = tuple[StrictStr, StrictStr, StrictStr, StrictStr, StrictStr]  # serial, program,
# code, issued_at, expires_at
# customer id, enrolled_at, profile (JSON text), cards, balances, lots, coupons, referral codes
WireCustomer = tuple[
    StrictStr,
    StrictStr | None,
    StrictStr | None,
    list[WireCard],
    list[WireBalance],
    list[WireLot],
    list[WireCoupon],
    list[StrictStr],
]
WireHead = tuple[StrictStr, StrictInt, StrictInt, Hex32]  # terminal, epoch, seq, hash


class BootstrapPage(_Model):
    """One page of a full snapshot as of ``cursor`` (``GET /v1/sync/bootstrap``): everything
    a till needs to serve the customers without their history. The first page (no
    ``after``) also carries the merchant-wide part: every till's chain head at the cursor,
    the usage counters and the coupons issued without a customer. Pages after the first
    name the same snapshot with ``at=<cursor>``; the till then pulls after ``cursor``."""

    protocol: StrictInt = PROTOCOL_VERSION
    cursor: StrictStr
    scope: StrictStr  # all | region (only customers whose home store is in the till's region)
    digest: Hex32  # SHA-256 of the whole snapshot (``ledger.snapshot.digest``)
    total: StrictInt  # customers in the whole snapshot
    heads: list[WireHead] | None = None
    usage: list[tuple[StrictStr, StrictInt]] | None = None
    coupons: list[WireCoupon] | None = None
    customers: list[WireCustomer]
    next_after: StrictStr | None  # customer id to continue after, None on the last page


class ProgramConfig(_Model):
    """The merchant's program configuration (``GET /v1/sync/config?have=N``).

    ``unchanged``: the till already has ``have`` >= ``version`` (``config`` is then empty);
    the till never applies a version at or below the one it has."""

    protocol: StrictInt = PROTOCOL_VERSION
    version: StrictInt  # 0: the server holds none; the till keeps its own file
    config: StrictStr  # TOML text of the [[programs]] tables (+ optional [guards], [nudges])
    merchant_id: StrictStr | None = None  # whose configuration this is (the till checks it)
    unchanged: bool = False


class PairRequest(_Model):
    protocol: StrictInt = PROTOCOL_VERSION
    token: Annotated[StrictStr, Field(min_length=16, max_length=128)]
    # The till's own ``terminal.id`` (additive): the server refuses a token made for another
    # terminal before using it (409 ``terminal_mismatch``). A till of an older release sends
    # none; it still pairs, and checks the answer's ``terminal_id`` itself.
    terminal_id: Ident | None = None


class PairResponse(_Model):
    protocol: StrictInt = PROTOCOL_VERSION
    terminal_id: StrictStr
    merchant_id: StrictStr
    store_id: StrictStr
    credential: StrictStr  # the bearer secret; the server keeps only its hash


class ErrorBody(_Model):
    code: StrictStr
    message: StrictStr


def make_cursor(merchant_id: str, server_seq: int, tag: str | None = None) -> str:
    """``<merchant>:<server_seq>``, with ``~<tag>`` when the server names the slot at that
    position (``cursor_tag``)."""
    return f"{merchant_id}:{server_seq}" + (f"~{tag}" if tag else "")


_TAG = re.compile(r"[0-9a-f]{16}")


def slot_tag(slot_hash: bytes) -> str:
    """The tag of a pull cursor: the first 8 bytes of the chain hash of the slot at the
    cursor's position, in hex. A server restored from a backup that has since given that
    position to another event no longer matches it (``409 cursor_ahead``)."""
    return slot_hash[:8].hex()


def _split_tag(cursor: str) -> tuple[str, str | None]:
    body, sep, tag = cursor.rpartition("~")
    if sep and _TAG.fullmatch(tag):
        return body, tag
    return cursor, None


def cursor_tag(cursor: str) -> str | None:
    """The slot tag of a pull cursor (None: an untagged one, from an older server)."""
    return _split_tag(cursor)[1]


def parse_cursor(cursor: str) -> tuple[str, int]:
    """``(merchant_id, server_seq)``; ValueError when it is not a cursor."""
    merchant, sep, seq = _split_tag(cursor)[0].rpartition(":")
    if not sep or not merchant or not seq.isdigit():
        raise ValueError(f"not a sync cursor: {cursor!r}")
    return merchant, int(seq)
