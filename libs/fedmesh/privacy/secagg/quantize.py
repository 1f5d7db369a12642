"""Fixed-point encoding of float deltas as uint32 mod 2^32, and decoding of their sums."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray

WORD = np.dtype("<u4")
"""The ring element: a little-endian uint32; arithmetic wraps mod 2^32."""

_SIGNED_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class FixedPointCodec:
    """Maps [−clip_range, clip_range] to integers; `max_summands` of them sum without wrapping.

    Each coordinate is clamped to the range, multiplied by `scale` and rounded
    to the nearest integer (two's complement mod 2^32). The scale is the
    largest for which a sum of `max_summands` encoded values stays inside a
    signed 32-bit integer, so the sum mod 2^32 decodes exactly; the rounding
    error of a decoded sum is at most max_summands / (2·scale) per coordinate.
    """

    clip_range: float
    max_summands: int
    scale: float = field(init=False)

    def __post_init__(self) -> None:
        if not math.isfinite(self.clip_range) or self.clip_range <= 0.0:
            raise ValueError(f"clip_range must be finite and > 0, got {self.clip_range}")
        if not 1 <= self.max_summands < _SIGNED_LIMIT // 2:
            raise ValueError(f"max_summands must be in [1, 2^30), got {self.max_summands}")
        # Each rounded value is at most clip_range·scale + 1/2 in magnitude.
        usable = _SIGNED_LIMIT - self.max_summands
        object.__setattr__(self, "scale", usable / (self.max_summands * self.clip_range))

    @property
    def resolution(self) -> float:
        """The value of one integer step, 1 / scale."""
        return 1.0 / self.scale

    def quantize(self, values: torch.Tensor) -> NDArray[np.uint32]:
        """Encode a flat float tensor as uint32 words; NaN or Inf is refused."""
        if values.dim() != 1 or not values.is_floating_point():
            raise ValueError(
                f"expected a 1-D floating-point tensor, got shape {tuple(values.shape)} "
                f"and dtype {values.dtype}"
            )
        if not bool(torch.isfinite(values).all()):
            raise ValueError("values contain NaN or Inf; expected finite values")
        clamped = values.detach().to(torch.float64).clamp(-self.clip_range, self.clip_range)
        integers = torch.round(clamped * self.scale).to(torch.int64).numpy()
        return integers.astype(WORD)

    def dequantize_sum(self, total: NDArray[np.uint32]) -> torch.Tensor:
        """Decode the sum mod 2^32 of at most `max_summands` encodings as float32."""
        signed = np.asarray(total, dtype=WORD).view(np.dtype("<i4"))
        return torch.from_numpy(signed.astype(np.float64) / self.scale).to(torch.float32)

    def dequantize_mean(self, total: NDArray[np.uint32], count: int) -> torch.Tensor:
        """Decode a sum of `count` encodings and divide by `count`."""
        if not 1 <= count <= self.max_summands:
            raise ValueError(f"count must be in [1, {self.max_summands}], got {count}")
        return self.dequantize_sum(total) / count
