"""Single-use coupon codes a till can check offline: a small payload signed with Ed25519.

The domain only encodes, decodes and checks; the signature primitive sits behind two
protocols (``Signer``, ``Verifier``) so the domain stays stdlib-only. The ``cryptography``
implementation lives in ``pos_loyalty.signing``.

Code layout (85 bytes, written as 136 base32 characters after a ``C`` prefix, so it survives
case changes by a keyboard-wedge scanner):

    version (1) | program tag (4) | serial (8) | expiry day (4) | customer tag (4) | sig (64)

The program and customer tags are the first 4 bytes of SHA-256 of the program id and
customer id (all zero for a bearer coupon); the expiry day counts days since 1970-01-01
(UTC): the coupon is valid up to and including 23:59:59 UTC of that day.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

_VERSION = 1
_PAYLOAD = struct.Struct(">B4s8sI4s")
_SIG_LEN = 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PREFIX = "C"


class Signer(Protocol):
    def sign(self, message: bytes) -> bytes: ...


class Verifier(Protocol):
    def verify(self, message: bytes, signature: bytes) -> bool: ...


def tag(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()[:4]


NO_CUSTOMER = b"\0\0\0\0"


@dataclass(frozen=True)
class Coupon:
    """What a coupon code says."""

    program_tag: bytes
    serial: str  # 16 hex digits
    expires_day: int
    customer_tag: bytes

    @property
    def expires_at(self) -> datetime:
        """The last moment the coupon is valid."""
        return _EPOCH + timedelta(days=self.expires_day + 1) - timedelta(microseconds=1)

    def payload(self) -> bytes:
        return _PAYLOAD.pack(
            _VERSION,
            self.program_tag,
            bytes.fromhex(self.serial),
            self.expires_day,
            self.customer_tag,
        )


def expiry_day(at: datetime, valid_days: int) -> int:
    """The UTC day number ``valid_days`` after ``at`` (the coupon's last valid day)."""
    return (at.astimezone(UTC) - _EPOCH).days + valid_days


def make_code(
    signer: Signer, program: str, serial: bytes, expires_day: int, customer: str | None
) -> tuple[Coupon, str]:
    coupon = Coupon(
        tag(program), serial.hex(), expires_day, tag(customer) if customer else NO_CUSTOMER
    )
    payload = coupon.payload()
    raw = payload + signer.sign(payload)
    return coupon, PREFIX + base64.b32encode(raw).decode("ascii").rstrip("=")


def looks_like_coupon(code: str) -> bool:
    return len(code) == 137 and code[:1].upper() == PREFIX


def read_code(code: str, verifiers: tuple[Verifier, ...]) -> Coupon | None:
    """The coupon in ``code`` if a trusted key signed it, else None (forged or altered)."""
    if not looks_like_coupon(code):
        return None
    body = code[1:].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != _PAYLOAD.size + _SIG_LEN:
        return None
    payload, signature = raw[: _PAYLOAD.size], raw[_PAYLOAD.size :]
    if not any(v.verify(payload, signature) for v in verifiers):
        return None
    version, program_tag, serial, day, customer_tag = _PAYLOAD.unpack(payload)
    if version != _VERSION:
        return None
    return Coupon(program_tag, serial.hex(), day, customer_tag)
