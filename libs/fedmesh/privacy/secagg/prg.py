"""Mask expansion: a 32-byte seed stretched into a uint32 vector by the ChaCha20 keystream."""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from numpy.typing import NDArray

from fedmesh.privacy.secagg.quantize import WORD

SEED_BYTES = 32
# Every seed keys exactly one mask, so a fixed nonce never repeats under a key.
_NONCE = bytes(16)


class MaskExpander:
    """Adds or subtracts PRG(seed), the seed's ChaCha20 keystream read as uint32, mod 2^32.

    The keystream is written into one buffer reused for every seed, so masking
    a million-parameter vector with k neighbours allocates nothing per mask.
    Not safe to share between threads.
    """

    def __init__(self, length: int) -> None:
        if length < 1:
            raise ValueError(f"mask length must be >= 1, got {length}")
        self.length = length
        self._zeros = bytes(WORD.itemsize * length)
        self._keystream = bytearray(WORD.itemsize * length)
        self._words = np.frombuffer(self._keystream, dtype=WORD)

    def __repr__(self) -> str:
        return f"MaskExpander(length={self.length})"

    def add_to(self, target: NDArray[np.uint32], seed: bytes) -> None:
        """target += PRG(seed) mod 2^32, in place."""
        np.add(target, self._expand(seed, target), out=target)

    def subtract_from(self, target: NDArray[np.uint32], seed: bytes) -> None:
        """target −= PRG(seed) mod 2^32, in place."""
        np.subtract(target, self._expand(seed, target), out=target)

    def _expand(self, seed: bytes, target: NDArray[np.uint32]) -> NDArray[np.uint32]:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"a mask seed is {SEED_BYTES} bytes, got {len(seed)}")
        if target.shape != (self.length,) or target.dtype != WORD:
            raise ValueError(
                f"target must be uint32 of shape ({self.length},), "
                f"got {target.dtype} of shape {target.shape}"
            )
        encryptor = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor()
        encryptor.update_into(self._zeros, self._keystream)
        return self._words
