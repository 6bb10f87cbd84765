"""Canonical encoding of events and the hash chain over them.

Canonical JSON: keys sorted, no whitespace, UTF-8. Each event's hash is
``SHA-256(prev_hash || canonical(body with seq))``; a till's first event chains from 32
zero bytes.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from typing import Any

from pos_loyalty.domain.events import Event

GENESIS = bytes(32)


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: bytes, event: Event) -> bytes:
    body = event.body()
    body["seq"] = event.seq
    return hashlib.sha256(prev_hash + canonical(body)).digest()


def payload_of(event: Event) -> str:
    return canonical({"p": [p.to_json() for p in event.postings], "d": dict(event.data)}).decode()


def event_from_row(row: Any) -> Event:
    payload = json.loads(row.payload)
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


# Preset dictionary for ``pack_response``: the skeleton every sale answer shares (keys in
# canonical order and the usual values), so even a short answer compresses well. It is part of
# the stored format: never change it in place. Streams made without it (older rows) carry no
# dictionary flag and still decompress through ``unpack_response``.
RESPONSE_ZDICT = (
    b'"amount":"code":"count":"expires_at":"+00:00","gift":"label":"line":"program":'
    b'"valid_until":{"kind":"wallet","payout":{"kind":"coupon",'
    b'"kind":"stamps","required":{"balance":"kind":"points","value":'
    b'{"balances":{"currency":"EUR","customer_id":"discounts":[],"earned":{},"issued":[],'
    b'"lines":[{"discount":0,"qty":1,"sku":"total":,"unit_price":}],"nudges":[],'
    b'"receipt_id":"receipt_text":["Points: ","Tier: "],"redeemed":{},"rewards":[],'
    b'"tier":"total":"total_before":"total_discount":0}'
)


def pack_response(response: dict[str, Any]) -> bytes:
    """A cached answer as stored: zlib over canonical JSON with ``RESPONSE_ZDICT`` (an answer
    is repetitive JSON, about three times smaller compressed; it is read back only when a
    receipt is retried)."""
    packer = zlib.compressobj(9, zdict=RESPONSE_ZDICT)
    return packer.compress(canonical(response)) + packer.flush()


def unpack_response(stored: bytes | str | None) -> dict[str, Any]:
    """The cached answer, or ``{}`` when there is none (a receipt learnt through sync)."""
    if not stored:
        return {}
    if isinstance(stored, str):  # a plain JSON placeholder ("{}")
        value = json.loads(stored)
    else:
        # The dictionary is used only by streams that ask for it (zlib's FDICT flag).
        unpacker = zlib.decompressobj(zdict=RESPONSE_ZDICT)
        value = json.loads(unpacker.decompress(bytes(stored)) + unpacker.flush())
    return value if isinstance(value, dict) else {}
