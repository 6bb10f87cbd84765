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


def pack_response(response: dict[str, Any]) -> bytes:
    """A cached answer as stored: zlib over canonical JSON (an answer is repetitive JSON,
    about three times smaller compressed; it is read back only when a receipt is retried)."""
    return zlib.compress(canonical(response), 6)


def unpack_response(stored: bytes | str | None) -> dict[str, Any]:
    """The cached answer, or ``{}`` when there is none (a receipt learnt through sync)."""
    if not stored:
        return {}
    if isinstance(stored, str):  # a plain JSON placeholder ("{}")
        value = json.loads(stored)
    else:
        value = json.loads(zlib.decompress(stored))
    return value if isinstance(value, dict) else {}
