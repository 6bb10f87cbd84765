"""Ed25519 signing for coupon codes, with the ``cryptography`` package.

The till's private key lives in a file in its data folder (created on first use, mode 0600);
other tills' and HQ's public keys are trusted through the configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class Ed25519Signer:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def public_hex(self) -> str:
        return (
            self._key.public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            .hex()
        )

    def verifier(self) -> Ed25519Verifier:
        return Ed25519Verifier(self._key.public_key())


class Ed25519Verifier:
    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key

    @staticmethod
    def from_hex(text: str) -> Ed25519Verifier:
        return Ed25519Verifier(Ed25519PublicKey.from_public_bytes(bytes.fromhex(text)))

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


class SigningKeyError(ValueError):
    """The till's coupon signing key file cannot be used (named, with what is wrong)."""


def _read_signer(path: Path) -> Ed25519Signer:
    raw = path.read_bytes()
    if len(raw) != 32:
        raise SigningKeyError(
            f"the coupon signing key {path} is not a raw 32-byte Ed25519 seed ({len(raw)} "
            "bytes): restore it from the backup of the data folder, or move it away so that "
            "a new one is made (coupons signed with the old key then need its public key in "
            "[coupons] trusted_keys)"
        )
    return Ed25519Signer(Ed25519PrivateKey.from_private_bytes(raw))


def load_or_create_signer(path: Path) -> Ed25519Signer:
    """The till's signing key at ``path`` (raw 32-byte seed), created if missing.

    Created whole or not at all: the seed is written and synced under a temporary name, then
    linked to ``path``, which fails if another process made it first (that one is used).
    A file left empty by a crash of an earlier release is refused by name
    (``SigningKeyError``), not read as a key."""
    if path.exists():
        return _read_signer(path)
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(seed)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_signer(path)  # another process made it first: theirs counts
    finally:
        tmp.unlink(missing_ok=True)
    return Ed25519Signer(key)
