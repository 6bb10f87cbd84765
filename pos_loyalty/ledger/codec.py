"""Canonical encoding of events, the hash chain over them, and the stored forms of the
ledger's bulky columns.

Canonical JSON: keys sorted, no whitespace, UTF-8. Each event's hash is
``SHA-256(prev_hash || canonical(body with seq))``; a till's first event chains from 32
zero bytes.

Stored forms (revision ``0005_compact``). What is stored is never what is hashed or sent:
the hash chain and the sync wire keep the canonical JSON text, byte for byte; these functions
turn it into a smaller stored value and back, exactly.

- ``events.payload`` and ``receipts.response``: ``STORED_DEFLATE`` (one byte), the id of the
  compression dictionary (varint), then a raw deflate stream of the canonical JSON text.
  Dictionary 0 is built in (``PAYLOAD_ZDICT`` / ``RESPONSE_ZDICT``: the key skeleton of the
  JSON); others are rows of ``codec_dicts``, trained from the ledger's own recent rows (a
  shop's menu and programs repeat in every sale) and never changed once written: they are
  part of the stored format, so a ledger carries the dictionaries its rows need. Older rows
  still read: a payload stored as TEXT is the canonical JSON itself, a response starting with
  a zlib header is the zlib stream of revisions up to 0004.
- ids (``lots``, ``receipts``): a canonical lower-case UUID string is stored as its 16 bytes,
  anything else as the text itself (SQLite keeps the two types apart, so the mapping is
  one-to-one). A lot id ``<event id>/<program>`` (``ids.lot_id``) is stored as the event id's
  16 bytes next to its program.
- times (``lots``): an aware UTC datetime as integer microseconds since 1970 (exact), any other
  as its ISO text.

Revision ``0006_events`` adds (``schema.EventId``/``EventKind``/``EventAt`` apply them for
SQLAlchemy readers):

- ``events.id``, ``events.customer_id``: ``id_key`` as above; ``events.kind``: ``kind_key``
  (a frozen table of small integers); ``events.at``: ``at_key`` (the exact ISO text of a UTC
  time as integer microseconds, any other text as it is).
- ``lots.earned_at``/``expires_at``: ``earned_key`` (relative to the lot id's UUIDv7 time)
  and ``expires_key`` (relative to ``earned_at``).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from pos_loyalty.domain.events import Event

GENESIS = bytes(32)


# What ``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` uses,
# made once (``dumps`` with these options builds a new encoder on every call).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(value: Any) -> bytes:
    return _CANONICAL.encode(value).encode()


def chain_hash(prev_hash: bytes, event: Event) -> bytes:
    body = event.body()
    body["seq"] = event.seq
    return hashlib.sha256(prev_hash + canonical(body)).digest()


def payload_of(event: Event) -> str:
    """The canonical JSON of what an event carries besides its columns (postings, data):
    the ``payload`` of the sync wire, stored through ``encode_payload``."""
    return canonical({"p": [p.to_json() for p in event.postings], "d": dict(event.data)}).decode()


def event_from_row(row: Any, dicts: Dictionaries | None = None, *, strict: bool = False) -> Event:
    """The event of an ``events`` row (stored payload) or of a wire event (payload text).

    ``strict`` (``ledger verify``): raises ValueError for a payload that is not exactly
    ``{"p": ..., "d": ...}``: the chain hash covers only those two, so anything else in it
    is content no hash vouches for (the server refuses such a push the same way,
    ``sync.protocol``). Everywhere else such a key is ignored, as it always was: a server
    that ran an older release may hold such an event, and refusing it on a pull would stop
    every till's pull at it for good."""
    payload = json.loads(decode_payload(row.payload, dicts))
    if strict and (type(payload) is not dict or payload.keys() != {"p", "d"}):
        keys = sorted(payload) if type(payload) is dict else type(payload).__name__
        raise ValueError(f"the payload must hold exactly the keys 'd' and 'p', not {keys}")
    return Event.from_body(
        {
            "id": row.id,
            "kind": row.kind,
            "terminal_id": row.terminal_id,
            "at": row.at,
            "customer_id": row.customer_id,
            "key": row.key,
            "postings": payload["p"],
            "data": payload["d"],
        },
        seq=row.seq,
    )


# -- compression dictionaries -----------------------------------------------------------------

PAYLOAD = "payload"
RESPONSE = "response"

# Built-in dictionaries (id 0): the key skeleton of the JSON, in canonical key order, and
# the usual values. Part of the stored format: never change them in place.
PAYLOAD_ZDICT = (
    b'{"d":{"amount":"code":"coupons":[{"expires_at":"program":"serial":"earned":{},"issued":[],'
    b'"lines":[{"category":"discount":"earn_base":{"free_units":"gift":"points_paid":{"qty":1,'
    b'"sku":"stamps_earned":{"stamps_redeemed":{"unit_price":}],"receipt_id":"redeemed":{},'
    b'"request_hash":"spend":{"uses":{}},"p":[{"delta":"expires_at":"+00:00","lot":"program":'
    b'"unit":"points"},{"unit":"spend"},{"unit":"stamps"}]}'
)
# The skeleton every sale answer shares (also the dictionary of the zlib streams of 0004).
RESPONSE_ZDICT = (
    b'"amount":"code":"count":"expires_at":"+00:00","gift":"label":"line":"program":'
    b'"valid_until":{"kind":"wallet","payout":{"kind":"coupon",'
    b'"kind":"stamps","required":{"balance":"kind":"points","value":'
    b'{"balances":{"currency":"EUR","customer_id":"discounts":[],"earned":{},"issued":[],'
    b'"lines":[{"discount":0,"qty":1,"sku":"total":,"unit_price":}],"nudges":[],'
    b'"receipt_id":"receipt_text":["Points: ","Tier: "],"redeemed":{},"rewards":[],'
    b'"tier":"total":"total_before":"total_discount":0}'
)
_BUILT_IN = {PAYLOAD: PAYLOAD_ZDICT, RESPONSE: RESPONSE_ZDICT}

STORED_DEFLATE = 0x01  # first byte of the stored form (a zlib stream starts with 0x?8)
TRAIN_BYTES = 32000  # size of a trained dictionary (deflate looks back at most 32 KiB)


def train(samples: list[bytes]) -> bytes:
    """A dictionary from recent rows' JSON texts, oldest first: the newest ``TRAIN_BYTES``
    (deflate finds matches with shorter distances near the end of the dictionary)."""
    return b"".join(samples)[-TRAIN_BYTES:]


class Dictionaries:
    """The compression dictionaries one ledger's rows use, by id (0: built in).

    A transaction works on a ``child``: dictionaries it trains stay in the child until the
    transaction commits (``publish``), so nothing is encoded with a dictionary that is not
    stored. ``loader`` fetches an id this process has not seen (another process trained it).
    """

    def __init__(
        self,
        parent: Dictionaries | None = None,
        loader: Callable[[int], tuple[str, bytes] | None] | None = None,
    ) -> None:
        self.parent = parent
        self.loader = loader
        self._known: dict[int, tuple[str, bytes]] = {}

    def child(self, loader: Callable[[int], tuple[str, bytes] | None] | None) -> Dictionaries:
        return Dictionaries(self, loader)

    def add(self, ident: int, purpose: str, zdict: bytes) -> None:
        if ident <= 0 or purpose not in _BUILT_IN:
            raise ValueError(f"not a trained dictionary: {ident} ({purpose})")
        self._known[ident] = (purpose, zdict)

    def publish(self) -> None:
        """Hand what this child learnt to its parent (after the transaction committed)."""
        if self.parent is not None:
            self.parent._known.update(self._known)

    def newest(self, purpose: str) -> int:
        """The id new values of ``purpose`` are encoded with."""
        own = max((i for i, (p, _) in self._known.items() if p == purpose), default=0)
        return max(own, self.parent.newest(purpose)) if self.parent is not None else own

    def zdict(self, purpose: str, ident: int) -> bytes:
        if ident == 0:
            return _BUILT_IN[purpose]
        scope: Dictionaries | None = self
        root = self
        while scope is not None:
            known = scope._known.get(ident)
            if known is not None:
                return known[1]
            root, scope = scope, scope.parent
        loaded = self.loader(ident) if self.loader is not None else None
        if loaded is None:
            raise ValueError(
                f"stored with compression dictionary {ident}, which this ledger does not hold"
            )
        # Only committed rows can be loaded (a transaction's own are in its child already).
        root._known[ident] = loaded
        return loaded[1]


_NO_DICTIONARIES = Dictionaries()


@lru_cache(maxsize=16)
def _packer(zdict: bytes) -> Any:
    # Setting a 32 KB dictionary costs more than compressing a sale: copy a prepared one.
    # Level 6: a commit's two values in ~25 us; level 9 saves ~2% of their size for ~60 us.
    return zlib.compressobj(6, zlib.DEFLATED, -15, 8, zdict=zdict)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _deflate(purpose: str, text: bytes, dicts: Dictionaries | None) -> bytes:
    dicts = dicts or _NO_DICTIONARIES
    ident = dicts.newest(purpose)
    packer = _packer(dicts.zdict(purpose, ident)).copy()
    body: bytes = packer.compress(text) + packer.flush()
    return bytes((STORED_DEFLATE,)) + _varint(ident) + body


def _inflate(purpose: str, stored: bytes, dicts: Dictionaries | None) -> bytes:
    """The text of a ``STORED_DEFLATE`` value; ValueError if it is damaged."""
    ident, shift, i = 0, 0, 1
    while True:
        if i >= len(stored) or shift > 56:
            raise ValueError("stored value is truncated (dictionary id)")
        byte = stored[i]
        i += 1
        ident |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    zdict = (dicts or _NO_DICTIONARIES).zdict(purpose, ident)
    unpacker = zlib.decompressobj(-15, zdict=zdict)
    try:
        text = unpacker.decompress(stored[i:]) + unpacker.flush()
    except zlib.error as exc:
        raise ValueError(f"stored value cannot be decompressed ({exc})") from None
    if not unpacker.eof or unpacker.unused_data:
        raise ValueError("stored value is truncated or has trailing bytes")
    return text


def encode_payload(text: str, dicts: Dictionaries | None = None) -> bytes:
    """The stored form of a payload's canonical JSON text (``events.payload``)."""
    return _deflate(PAYLOAD, text.encode(), dicts)


def decode_payload(stored: str | bytes | memoryview, dicts: Dictionaries | None = None) -> str:
    """The payload text, exactly as encoded: from the stored form, or a text as it is (rows
    written before 0005 and the sync wire carry the text itself)."""
    if isinstance(stored, str):
        return stored
    stored = bytes(stored)
    if not stored or stored[0] != STORED_DEFLATE:
        raise ValueError("stored payload has an unknown format")
    try:
        return _inflate(PAYLOAD, stored, dicts).decode()
    except UnicodeDecodeError:
        raise ValueError("stored payload is not UTF-8 text") from None


def pack_response(response: dict[str, Any], dicts: Dictionaries | None = None) -> bytes:
    """A cached answer as stored (read back only when a receipt is retried)."""
    return _deflate(RESPONSE, canonical(response), dicts)


def response_text(
    stored: bytes | str | memoryview | None, dicts: Dictionaries | None = None
) -> bytes:
    """The canonical JSON of a cached answer (``b""`` when there is none)."""
    if not stored:
        return b""
    if isinstance(stored, str):  # a plain JSON placeholder ("{}")
        return stored.encode()
    stored = bytes(stored)
    if stored[0] == STORED_DEFLATE:
        return _inflate(RESPONSE, stored, dicts)
    # A zlib stream of revisions up to 0004: the dictionary only when it asks for it (FDICT).
    unpacker = zlib.decompressobj(zdict=RESPONSE_ZDICT)
    try:
        return unpacker.decompress(stored) + unpacker.flush()
    except zlib.error as exc:
        raise ValueError(f"stored answer cannot be decompressed ({exc})") from None


def unpack_response(
    stored: bytes | str | memoryview | None, dicts: Dictionaries | None = None
) -> dict[str, Any]:
    """The cached answer, or ``{}`` when there is none (a receipt learnt through sync)."""
    text = response_text(stored, dicts)
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


# -- ids and times --------------------------------------------------------------------------


def _uuid_bytes(value: str) -> bytes | None:
    """The 16 bytes of a canonical lower-case UUID string, else None."""
    if len(value) != 36 or value[8] != "-" or value[13] != "-" or value[18] != "-":
        return None
    if value[23] != "-":
        return None
    digits = value[:8] + value[9:13] + value[14:18] + value[19:23] + value[24:]
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        return None
    # hex() gives back exactly the 32 lower-case digits (fromhex also takes upper case and
    # spaces): then the id is the canonical text of these 16 bytes
    return raw if len(raw) == 16 and raw.hex() == digits else None


def _uuid_text(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def id_key(value: str) -> bytes | str:
    """The stored form of an id (a UUID as its 16 bytes, anything else as it is)."""
    return _uuid_bytes(value) or value


def id_text(stored: bytes | str | memoryview) -> str:
    if isinstance(stored, str):
        return stored
    raw = bytes(stored)
    if len(raw) != 16:
        raise ValueError(f"stored id has {len(raw)} bytes, not 16")
    return _uuid_text(raw)


def lot_key(lot_id: str, program: str) -> bytes | str:
    """The stored form of a lot id next to its program: ``<uuid>/<program>`` as the 16 bytes."""
    head, sep, tail = lot_id.partition("/")
    if sep and tail == program:
        raw = _uuid_bytes(head)
        if raw is not None:
            return raw
    return lot_id


def lot_text(stored: bytes | str | memoryview, program: str) -> str:
    if isinstance(stored, str):
        return stored
    return f"{id_text(stored)}/{program}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_ZERO = timedelta(0)


def time_key(value: datetime) -> int | str:
    """An aware UTC time as integer microseconds since 1970, any other as its ISO text."""
    if value.tzinfo is not None and value.utcoffset() == _ZERO:
        return (value - _EPOCH) // _MICRO
    return value.isoformat()


def time_value(stored: int | str) -> datetime:
    if isinstance(stored, int):
        return _EPOCH + timedelta(microseconds=stored)
    if isinstance(stored, str):
        return datetime.fromisoformat(stored)
    raise ValueError(f"stored time has an unknown form: {stored!r}")


# Lot times (0006_events). A lot is made by its crediting event, whose id (a UUIDv7: its
# first 48 bits are the milliseconds it was made at) is the lot's key, so ``earned_at`` (the
# event's ``at``) is stored as microseconds after those milliseconds: a small integer when
# the event was made when it happened. ``expires_at`` is stored as its distance from
# ``earned_at`` (a program's validity: whole days or seconds as a rule), the unit in the
# two low bits. Integers only for UTC times (the forms of ``time_key``); any other time as
# its ISO text, as before.
_DAY_MICROS = 86_400_000_000
_SECOND_MICROS = 1_000_000


def _lot_base(lot: bytes | str | memoryview) -> int:
    if isinstance(lot, str):
        return 0
    raw = bytes(lot)
    return int.from_bytes(raw[:6], "big") * 1000 if len(raw) == 16 else 0


def earned_key(earned: datetime, lot: bytes | str) -> int | str:
    """The stored ``lots.earned_at`` of a lot stored as ``lot`` (``lot_key``)."""
    key = time_key(earned)
    return key - _lot_base(lot) if isinstance(key, int) else key


def earned_value(stored: int | str, lot: bytes | str | memoryview) -> datetime:
    if isinstance(stored, int):
        return time_value(stored + _lot_base(lot))
    return time_value(stored)


def expires_key(expires: datetime | None, earned: datetime) -> int | str | None:
    """The stored ``lots.expires_at`` of a lot earned at ``earned``."""
    if expires is None:
        return None
    end, start = time_key(expires), time_key(earned)
    if not (isinstance(end, int) and isinstance(start, int)):
        return expires.isoformat()
    delta = end - start
    if delta % _DAY_MICROS == 0:
        return (delta // _DAY_MICROS) * 4 + 2
    if delta % _SECOND_MICROS == 0:
        return (delta // _SECOND_MICROS) * 4 + 1
    return delta * 4


def expires_value(stored: int | str | None, earned: datetime) -> datetime | None:
    if stored is None:
        return None
    if isinstance(stored, str):
        return datetime.fromisoformat(stored)
    if not isinstance(stored, int) or stored & 3 == 3 or earned.utcoffset() != _ZERO:
        raise ValueError(f"stored expiry has an unknown form: {stored!r}")
    unit = (1, _SECOND_MICROS, _DAY_MICROS)[stored & 3]
    return time_value(time_key(earned) + (stored >> 2) * unit)  # type: ignore[operator]


# Event kinds as small integers (``events.kind``, 0006_events): a frozen table, part of the
# stored format; append new kinds at the end (a kind not here is stored as its text).
KIND_CODES: dict[str, int] = {
    kind: code
    for code, kind in enumerate(
        (
            "customer.enrolled",
            "card.issued",
            "card.blocked",
            "sale.committed",
            "refund.committed",
            "coupon.issued",
            "referral.rewarded",
            "wallet.paid_out",
            "account.adjusted",
            "points.expired",
        ),
        start=1,
    )
}
_KIND_TEXTS = {code: kind for kind, code in KIND_CODES.items()}


def kind_key(kind: str) -> int | str:
    """The stored form of an event kind (``events.kind``)."""
    return KIND_CODES.get(kind, kind)


def kind_text(stored: int | str) -> str:
    if isinstance(stored, str):
        return stored
    try:
        return _KIND_TEXTS[stored]
    except KeyError:
        raise ValueError(f"stored event kind has an unknown code: {stored!r}") from None


def at_key(text: str) -> int | str:
    """The stored form of an event's ``at`` text (``events.at``, 0006_events): integer
    microseconds since 1970 when the text is exactly the ISO form of a UTC time
    (``datetime.isoformat``, offset +00:00), which ``at_text`` gives back byte for byte;
    any other text as it is."""
    if len(text) in (25, 32) and text.endswith("+00:00"):
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return text
        if value.isoformat() == text:
            return (value - _EPOCH) // _MICRO
    return text


def at_text(stored: int | str) -> str:
    """The ``at`` text of a stored ``events.at`` (``at_key``)."""
    if isinstance(stored, int):
        return (_EPOCH + timedelta(microseconds=stored)).isoformat()
    if isinstance(stored, str):
        return stored
    raise ValueError(f"stored event time has an unknown form: {stored!r}")


TRAIN_FIRST = 512  # a till trains its first dictionaries at its 512th event...
TRAIN_EVERY = 32768  # ...and new ones every 32768 events (a menu changes; 1 byte/event)


def train_due(seq: int) -> bool:
    """Whether a till appending its event ``seq`` trains new dictionaries first."""
    return seq == TRAIN_FIRST or seq % TRAIN_EVERY == 0
