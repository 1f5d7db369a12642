"""The messages of the four SecAgg+ stages: plain dataclasses of ints and bytes.

Node identities are the round's participant indices (0 ≤ id < 2^32 − 1); the
wiring maps them to SPIFFE IDs. Vectors travel as little-endian uint32 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class KeyAdvertisement:
    """Stage 0, node → server: the node's two X25519 public keys for this round.

    ``signature`` is the node's Ed25519 signature over the keys, which the wiring
    adds and checks (`fedmesh.client.signing`) so that a server cannot substitute
    keys; the protocol itself passes it on untouched.
    """

    node: int
    encryption_public_key: bytes
    masking_public_key: bytes
    signature: bytes = b""


@dataclass(frozen=True)
class NeighbourKeys:
    """Stage 0, server → node: the advertisements of the recipient's neighbours that arrived."""

    recipient: int
    advertisements: tuple[KeyAdvertisement, ...]


@dataclass(frozen=True)
class EncryptedShare:
    """The sender's shares of its mask key and self-mask seed, sealed for one neighbour."""

    sender: int
    recipient: int
    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True)
class KeyShares:
    """Stage 1, node → server: one sealed share bundle per neighbour that advertised keys."""

    sender: int
    shares: tuple[EncryptedShare, ...]


@dataclass(frozen=True)
class ShareDelivery:
    """Stage 1, server → node: the bundles addressed to it by nodes still in the round."""

    recipient: int
    shares: tuple[EncryptedShare, ...]


@dataclass(frozen=True)
class MaskedInput:
    """Stage 2, node → server: the quantised update plus self-mask and pairwise masks, mod 2^32."""

    node: int
    masked_vector: bytes = field(repr=False)


@dataclass(frozen=True)
class UnmaskingRequest:
    """Stage 3, server → node: the nodes whose masked inputs the server holds."""

    recipient: int
    survivors: tuple[int, ...]


@dataclass(frozen=True)
class RevealedShare:
    """One decrypted share, f(x) as 33 bytes, of a secret owned by `owner`."""

    owner: int
    value: bytes


@dataclass(frozen=True)
class UnmaskingShares:
    """Stage 3, node → server: self-mask shares of survivors, mask-key shares of dropouts."""

    sender: int
    self_mask_shares: tuple[RevealedShare, ...]
    mask_key_shares: tuple[RevealedShare, ...]
