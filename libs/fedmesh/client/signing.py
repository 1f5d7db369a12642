"""A node's Ed25519 signing key, and the exact byte strings it signs (DESIGN §5 "Security").

Every signed message is a purpose string followed by its fields, each field
prefixed with its length as 4 big-endian bytes, so no two different field
tuples (and no two purposes) ever encode to the same bytes:

    update:        "fedmesh/update/v1" ‖ run_id ‖ round (8 bytes BE) ‖ node_id ‖ nonce ‖ digest
    advertisement: "fedmesh/secagg-advertisement/v1" ‖ round_context ‖ index (4 bytes BE)
                   ‖ encryption public key ‖ masking public key

Strings are UTF-8; the digest is the 64 lowercase hex characters sent in the
header. The key file is an unencrypted PKCS#8 PEM ("BEGIN PRIVATE KEY"), as
`openssl genpkey -algorithm ed25519` writes it, created with mode 0600.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
NONCE_BYTES = 16
"""Bytes of the random nonce a node draws for each update."""
MAX_NONCE_BYTES = 64

SIGNING_KEYS_FIELD = "signing_keys"
"""The round-record field where the coordinator puts the participants' keys (JSON node → hex)."""

UPDATE_PURPOSE = b"fedmesh/update/v1"
ADVERTISEMENT_PURPOSE = b"fedmesh/secagg-advertisement/v1"


def _framed(*parts: bytes) -> bytes:
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def update_message(run_id: str, round_no: int, node_id: str, nonce: bytes, digest: str) -> bytes:
    """The bytes a node signs for one update."""
    return _framed(
        UPDATE_PURPOSE,
        run_id.encode(),
        round_no.to_bytes(8, "big"),
        node_id.encode(),
        nonce,
        digest.encode(),
    )


def advertisement_message(
    round_context: bytes, index: int, encryption_public_key: bytes, masking_public_key: bytes
) -> bytes:
    """The bytes a node signs for its SecAgg+ key advertisement in one bucket."""
    return _framed(
        ADVERTISEMENT_PURPOSE,
        round_context,
        index.to_bytes(4, "big"),
        encryption_public_key,
        masking_public_key,
    )


def _verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_update(
    public_key: bytes,
    signature: bytes,
    run_id: str,
    round_no: int,
    node_id: str,
    nonce: bytes,
    digest: str,
) -> bool:
    """Whether ``signature`` is ``public_key``'s signature of this update."""
    return _verify(public_key, signature, update_message(run_id, round_no, node_id, nonce, digest))


def verify_advertisement(
    public_key: bytes,
    signature: bytes,
    round_context: bytes,
    index: int,
    encryption_public_key: bytes,
    masking_public_key: bytes,
) -> bool:
    """Whether ``signature`` is ``public_key``'s signature of this key advertisement."""
    message = advertisement_message(round_context, index, encryption_public_key, masking_public_key)
    return _verify(public_key, signature, message)


def check_public_key(raw: bytes) -> str | None:
    """Why ``raw`` is not an Ed25519 public key, or None when it is one."""
    if len(raw) != PUBLIC_KEY_BYTES:
        return f"it is {len(raw)} bytes; expected a raw {PUBLIC_KEY_BYTES}-byte Ed25519 public key"
    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        return "it is not a valid Ed25519 public key"
    return None


@dataclass(frozen=True)
class SignedUpdate:
    """The nonce drawn for an update and the signature over it."""

    nonce: bytes
    signature: bytes


class NodeSigner:
    """Signs a node's updates and key advertisements; never shows its private key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def __repr__(self) -> str:
        return f"NodeSigner(public_key={self.public_key.hex()})"

    @classmethod
    def generate(cls) -> NodeSigner:
        """A signer with a fresh key (simulated nodes, tests)."""
        return cls(Ed25519PrivateKey.generate())

    def sign_update(self, run_id: str, round_no: int, node_id: str, digest: str) -> SignedUpdate:
        """A fresh random nonce and the signature over the update it is drawn for."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        message = update_message(run_id, round_no, node_id, nonce, digest)
        return SignedUpdate(nonce, self._key.sign(message))

    def sign_advertisement(
        self,
        round_context: bytes,
        index: int,
        encryption_public_key: bytes,
        masking_public_key: bytes,
    ) -> bytes:
        """The signature over this node's key advertisement."""
        return self._key.sign(
            advertisement_message(round_context, index, encryption_public_key, masking_public_key)
        )


class SigningKeyError(Exception):
    """A key file that cannot be used: unreadable, not Ed25519, or readable by others."""


def load_or_create_signing_key(path: Path) -> NodeSigner:
    """The node's signer from its PEM key file, created (mode 0600) on first start.

    A file that group or others may read or write is refused, as ssh refuses
    such keys: another user could sign in the node's name.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _load(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
        file.flush()
        os.fsync(file.fileno())
    return NodeSigner(key)


def _load(path: Path) -> NodeSigner:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SigningKeyError(
            f"signing key {path} has mode {mode:04o}; other users could use it. "
            f"Restrict it with: chmod 600 {path}"
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(
            f"signing key {path} is not an unencrypted PEM private key ({exc})"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"signing key {path} is not an Ed25519 key")
    return NodeSigner(key)
