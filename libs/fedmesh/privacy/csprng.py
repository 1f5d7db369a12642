"""A cryptographically secure random source: ChaCha20 keystream turned into uniforms and normals."""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

KEY_BYTES = 32
_UNIT_53 = 2.0**-53


class ChaChaRandom:
    """Draws from a ChaCha20 keystream keyed by 32 bytes from `os.urandom`.

    Every draw uses a fresh nonce (a 96-bit call counter), so no keystream byte
    is ever used twice. `from_seed` gives a reproducible stream for tests and
    benchmarks only: a known seed makes the noise known and voids the privacy.
    """

    def __init__(self) -> None:
        self._key = os.urandom(KEY_BYTES)
        self._calls = 0

    def __repr__(self) -> str:
        return f"ChaChaRandom(draws={self._calls})"

    @classmethod
    def from_seed(cls, seed: bytes) -> ChaChaRandom:
        """A reproducible generator; for tests and benchmarks only, never for real noise."""
        if len(seed) != KEY_BYTES:
            raise ValueError(f"seed must be {KEY_BYTES} bytes, got {len(seed)}")
        rng = cls.__new__(cls)
        rng._key = bytes(seed)
        rng._calls = 0
        return rng

    def random_bytes(self, count: int) -> bytes:
        """The next `count` keystream bytes."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        # 16-byte ChaCha20 IV in `cryptography`: 4-byte block counter, then 12-byte nonce.
        nonce = bytes(4) + self._calls.to_bytes(12, "little")
        self._calls += 1
        encryptor = Cipher(algorithms.ChaCha20(self._key, nonce), mode=None).encryptor()
        return encryptor.update(bytes(count))

    def uniform(self, count: int) -> torch.Tensor:
        """`count` float64 uniforms in the open interval (0, 1), 53 random bits each."""
        words = np.frombuffer(self.random_bytes(8 * count), dtype="<u8")
        # (k + 0.5) / 2^53 for k in [0, 2^53) never reaches 0 or 1, so log() below is finite.
        unit = ((words >> np.uint64(11)).astype(np.float64) + 0.5) * _UNIT_53
        return torch.from_numpy(unit)

    def standard_normal(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """Independent N(0, 1) samples by the Box–Muller transform, computed in float64."""
        count = math.prod(shape)
        pairs = (count + 1) // 2
        u = self.uniform(2 * pairs)
        radius = torch.sqrt(-2.0 * torch.log(u[:pairs]))
        angle = (2.0 * math.pi) * u[pairs:]
        normals = torch.cat((radius * torch.cos(angle), radius * torch.sin(angle)))
        return normals[:count].reshape(shape).to(dtype)
