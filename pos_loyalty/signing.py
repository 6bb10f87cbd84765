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


def load_or_create_signer(path: Path) -> Ed25519Signer:
    """The till's signing key at ``path`` (raw 32-byte seed), created if missing."""
    if path.exists():
        return Ed25519Signer(Ed25519PrivateKey.from_private_bytes(path.read_bytes()))
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(seed)
    return Ed25519Signer(key)
