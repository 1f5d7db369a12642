"""X25519 key agreement and the HKDF derivations of per-pair secrets for one round."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedmesh.privacy.secagg.errors import InvalidSecAggMessage

PUBLIC_KEY_BYTES = 32
PRIVATE_KEY_BYTES = 32
_MASK_PURPOSE = b"fedmesh/secagg/v1/pairwise-mask"
_SHARE_PURPOSE = b"fedmesh/secagg/v1/share-encryption"


def public_bytes(private_key: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key of `private_key`."""
    return private_key.public_key().public_bytes_raw()


def private_bytes(private_key: X25519PrivateKey) -> bytes:
    """The raw 32-byte private key, the form that is secret-shared."""
    return private_key.private_bytes_raw()


def private_key_from_bytes(raw: bytes) -> X25519PrivateKey:
    """Load a raw 32-byte X25519 private key."""
    if len(raw) != PRIVATE_KEY_BYTES:
        raise ValueError(f"an X25519 private key is {PRIVATE_KEY_BYTES} bytes, got {len(raw)}")
    return X25519PrivateKey.from_private_bytes(raw)


def agree(private_key: X25519PrivateKey, peer_public_key: bytes) -> bytes:
    """The X25519 shared secret with a peer; a low-order (degenerate) peer key is refused."""
    if len(peer_public_key) != PUBLIC_KEY_BYTES:
        raise InvalidSecAggMessage(
            f"an X25519 public key is {PUBLIC_KEY_BYTES} bytes, got {len(peer_public_key)}"
        )
    try:
        return private_key.exchange(X25519PublicKey.from_public_bytes(peer_public_key))
    except ValueError as error:
        # `cryptography` refuses the all-zero shared secret that a low-order point yields.
        raise InvalidSecAggMessage(
            "public key is a low-order point: it yields no shared secret"
        ) from error


def pairwise_mask_seed(
    shared_secret: bytes, round_context: bytes, node_a: int, node_b: int
) -> bytes:
    """The PRG seed of the mask between two nodes; the same whichever of them derives it."""
    return _derive(shared_secret, round_context, _MASK_PURPOSE, node_a, node_b)


def share_encryption_key(
    shared_secret: bytes, round_context: bytes, node_a: int, node_b: int
) -> bytes:
    """The AEAD key under which two nodes send each other their Shamir shares."""
    return _derive(shared_secret, round_context, _SHARE_PURPOSE, node_a, node_b)


def _derive(
    shared_secret: bytes, round_context: bytes, purpose: bytes, node_a: int, node_b: int
) -> bytes:
    low, high = sorted((node_a, node_b))
    info = purpose + low.to_bytes(4, "big") + high.to_bytes(4, "big")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=round_context, info=info).derive(
        shared_secret
    )
