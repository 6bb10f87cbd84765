"""Identifiers: UUIDv7 for events (time-ordered, made at the till), derived ids for lots.

Python 3.11's ``uuid`` has no ``uuid7`` (it arrives in 3.14), so it is built here from
RFC 9562 section 5.7: 48-bit Unix milliseconds, version 7, 74 random bits.
"""

from __future__ import annotations

import os
import time
import uuid

_NAMESPACE = uuid.UUID("6f1c1b2e-5d0a-4c53-9a53-0b3e0d2c9e71")


def uuid7(unix_ms: int | None = None) -> str:
    """A new UUIDv7 as a canonical string."""
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a: 12 bits
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def derived_id(*parts: str) -> str:
    """A deterministic id (UUIDv5) from ``parts``: the same parts on any till give the same id."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))


def lot_id(event_id: str, program: str) -> str:
    """The lot of points that event ``event_id`` credited to ``program``."""
    return f"{event_id}/{program}"


# The one lot per customer and program that credits which never expire go to (points
# without expiry, a lifetime tier's spend; ``Posting.credit`` names it in ``Posting.lot``),
# instead of one lot per sale kept forever (ledger rows, state loads and bootstrap
# snapshots would grow with every visit). Credits recorded before it existed keep their
# own lots; both count the same.
LIFETIME_LOT = "lifetime"


def expiry_event_id(lot: str) -> str:
    """The one id of the event that expires ``lot`` (two tills expiring it make one event)."""
    return derived_id("expiry", lot)
