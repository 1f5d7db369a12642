"""Client-side L2 clipping of a model delta to norm C."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ClippedDelta:
    """A delta scaled to L2 norm at most `clip_norm`, with its norm before clipping."""

    tensor: torch.Tensor
    original_norm: float
    clip_norm: float
    clipped: bool


def clip_l2(delta: torch.Tensor, clip_norm: float) -> ClippedDelta:
    """Scale `delta` by min(1, C / ||delta||_2) so its L2 norm is at most C.

    The norm is computed in float64 so a float32 delta of millions of entries
    does not lose precision; the result keeps the input's dtype and shape.
    """
    if not math.isfinite(clip_norm) or clip_norm <= 0.0:
        raise ValueError(f"clip_norm must be a finite positive number, got {clip_norm}")
    if not delta.is_floating_point():
        raise ValueError(f"delta must be a floating-point tensor, got dtype {delta.dtype}")
    norm = float(torch.linalg.vector_norm(delta, dtype=torch.float64))
    if not math.isfinite(norm):
        raise ValueError("delta contains NaN or Inf; expected finite values")
    if norm <= clip_norm:
        return ClippedDelta(delta, norm, clip_norm, clipped=False)
    # One ulp of headroom: rounding the scaled entries must not push the norm past C.
    factor = clip_norm / norm * (1.0 - torch.finfo(delta.dtype).eps)
    scaled = delta * factor
    return ClippedDelta(scaled, norm, clip_norm, clipped=True)
