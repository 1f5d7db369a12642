"""Mask expansion: a 32-byte seed stretched into a uint32 vector by the ChaCha20 keystream."""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from numpy.typing import NDArray

from fedmesh.privacy.secagg.quantize import WORD

SEED_BYTES = 32
# Every seed keys exactly one mask, so a fixed nonce never repeats under a key.
_NONCE = bytes(16)


def expand_mask(seed: bytes, length: int) -> NDArray[np.uint32]:
    """`length` pseudorandom uint32 words (read-only) from the ChaCha20 keystream of `seed`."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a mask seed is {SEED_BYTES} bytes, got {len(seed)}")
    if length < 1:
        raise ValueError(f"mask length must be >= 1, got {length}")
    encryptor = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor()
    keystream = encryptor.update(bytes(WORD.itemsize * length))
    return np.frombuffer(keystream, dtype=WORD)
