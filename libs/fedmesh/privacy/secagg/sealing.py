"""Authenticated encryption of the Shamir shares one node sends another (ChaCha20-Poly1305)."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from fedmesh.privacy.secagg.errors import InvalidSecAggMessage
from fedmesh.privacy.secagg.messages import EncryptedShare
from fedmesh.privacy.secagg.shamir import SHARE_BYTES, ShamirShare

NONCE_BYTES = 12
_AAD_PURPOSE = b"fedmesh/secagg/v1/shares"


def seal_shares(
    key: bytes,
    round_context: bytes,
    sender: int,
    recipient: int,
    mask_key_share: ShamirShare,
    self_mask_share: ShamirShare,
) -> EncryptedShare:
    """Encrypt the sender's two shares for `recipient`, bound to the round and to both nodes."""
    nonce = os.urandom(NONCE_BYTES)
    plaintext = mask_key_share.y_bytes() + self_mask_share.y_bytes()
    ciphertext = ChaCha20Poly1305(key).encrypt(
        nonce, plaintext, _associated_data(round_context, sender, recipient)
    )
    return EncryptedShare(sender=sender, recipient=recipient, nonce=nonce, ciphertext=ciphertext)


def open_shares(
    key: bytes, round_context: bytes, message: EncryptedShare
) -> tuple[ShamirShare, ShamirShare]:
    """Decrypt and authenticate a share bundle; returns (mask-key share, self-mask share).

    Both shares are points at x = recipient + 1, the recipient's share index.
    """
    if len(message.nonce) != NONCE_BYTES:
        raise InvalidSecAggMessage(
            f"share from node {message.sender}: nonce is {len(message.nonce)} bytes, "
            f"expected {NONCE_BYTES}"
        )
    associated = _associated_data(round_context, message.sender, message.recipient)
    try:
        plaintext = ChaCha20Poly1305(key).decrypt(message.nonce, message.ciphertext, associated)
    except InvalidTag as error:
        raise InvalidSecAggMessage(
            f"share from node {message.sender} to node {message.recipient} failed authentication"
        ) from error
    if len(plaintext) != 2 * SHARE_BYTES:
        raise InvalidSecAggMessage(
            f"share from node {message.sender}: {len(plaintext)} bytes, expected {2 * SHARE_BYTES}"
        )
    x = message.recipient + 1
    try:
        mask_key_share = ShamirShare.from_y_bytes(x, plaintext[:SHARE_BYTES])
        self_mask_share = ShamirShare.from_y_bytes(x, plaintext[SHARE_BYTES:])
    except ValueError as error:
        raise InvalidSecAggMessage(f"share from node {message.sender}: {error}") from error
    return mask_key_share, self_mask_share


def _associated_data(round_context: bytes, sender: int, recipient: int) -> bytes:
    return _AAD_PURPOSE + sender.to_bytes(4, "big") + recipient.to_bytes(4, "big") + round_context
