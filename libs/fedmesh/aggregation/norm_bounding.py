"""Norm bounding (Sun et al., 2019): scale every update to an L2 norm ≤ M, then average."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedmesh.aggregation.gram import combine
from fedmesh.aggregation.result import AggregationResult, UpdateEvidence
from fedmesh.aggregation.source import (
    TensorSource,
    UpdateSource,
    check_block_size,
    default_block_size,
    normalised_weights,
    require_finite,
)


def norm_bounding(
    updates: torch.Tensor, bound: float, weights: Sequence[float] | None = None
) -> AggregationResult:
    """Weighted mean of the updates after scaling each to an L2 norm of at most `bound`."""
    source = TensorSource(updates, weights)
    return norm_bounding_source(source, bound, default_block_size(source.n, source.device))


def update_norms(source: UpdateSource, block_size: int) -> torch.Tensor:
    """The L2 norm of every update (float64, CPU), from one pass over the blocks."""
    check_block_size(block_size)
    squares = torch.zeros(source.n, dtype=torch.float64, device=source.device)
    for _, block in source.iter_blocks(block_size):
        squares += torch.linalg.vector_norm(block, dim=1).double().square()
    require_finite(squares, "the norm of an update")
    return squares.sqrt().cpu()


def norm_bounding_source(source: UpdateSource, bound: float, block_size: int) -> AggregationResult:
    """Norm bounding over a block source: one pass for the norms, one for the mean."""
    if not bound > 0:
        raise ValueError(f"bound must be > 0, got {bound}")
    norms = update_norms(source, block_size)
    scales = (bound / norms.clamp(min=1e-300)).clamp(max=1.0)
    aggregate = combine(source, normalised_weights(source) * scales, block_size)
    evidence = []
    for i in range(source.n):
        norm, scale = float(norms[i]), float(scales[i])
        clipped = scale < 1.0
        if clipped:
            reason = f"norm {norm:.6g} above the bound {bound}: scaled by {scale:.3g}"
        else:
            reason = f"norm {norm:.6g} within the bound {bound}: kept whole"
        evidence.append(UpdateEvidence(i, norm, False, clipped, reason))
    return AggregationResult(aggregate, evidence, "norm_bounding")
