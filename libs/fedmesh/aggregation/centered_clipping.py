"""Centered clipping (Karimireddy, He & Jaggi, ICML 2021).

v ← v + (1/n) Σ_i (x_i − v)·min(1, τ/‖x_i − v‖), from the reference v₀ (the
previous aggregate, i.e. server momentum). Every iterate is γ·v₀ + Σ c_i x_i,
so the distances come from the Gram matrix and the updates are read twice.
"""

from __future__ import annotations

import torch

from fedmesh.aggregation.errors import InvalidUpdatesError
from fedmesh.aggregation.gram import combine, geometry
from fedmesh.aggregation.result import AggregationResult, UpdateEvidence
from fedmesh.aggregation.source import (
    TensorSource,
    UpdateSource,
    default_block_size,
    require_finite,
)


def centered_clipping(
    updates: torch.Tensor,
    reference: torch.Tensor | None = None,
    tau: float = 1.0,
    iterations: int = 3,
) -> AggregationResult:
    """Centered clipping of the updates around `reference` (zeros when None)."""
    source = TensorSource(updates)
    block_size = default_block_size(source.n, source.device)
    return centered_clipping_source(source, reference, tau, iterations, block_size)


def centered_clipping_source(
    source: UpdateSource,
    reference: torch.Tensor | None,
    tau: float,
    iterations: int,
    block_size: int,
) -> AggregationResult:
    """Centered clipping over a block source."""
    if not tau > 0 or iterations < 1:
        raise ValueError(f"tau must be > 0 and iterations ≥ 1, got tau={tau}, {iterations=}")
    start = _check_reference(reference, source)
    # One step only measures distances to the reference: norms suffice, no n²·m product.
    shape = geometry(source, block_size, start, pairwise=iterations > 1)
    n = source.n
    coefficients = torch.zeros(n, dtype=torch.float64)
    offset = 1.0 if start is not None else 0.0
    for _ in range(iterations):
        distances = shape.distances_to(coefficients, offset)
        scales = (tau / distances.clamp(min=1e-300)).clamp(max=1.0)
        kept = float(scales.mean())
        coefficients = coefficients * (1.0 - kept) + scales / n
        offset *= 1.0 - kept
    aggregate = combine(source, coefficients, block_size, start, offset)
    require_finite(aggregate, "the centered-clipping aggregate")
    evidence = []
    for i in range(n):
        distance, scale = float(distances[i]), float(scales[i])
        clipped = scale < 1.0
        if clipped:
            reason = f"distance {distance:.6g} to the centre above τ={tau}: scaled by {scale:.3g}"
        else:
            reason = f"distance {distance:.6g} to the centre within τ={tau}: kept whole"
        evidence.append(UpdateEvidence(i, distance, False, clipped, reason))
    return AggregationResult(aggregate, evidence, "centered_clipping")


def _check_reference(reference: torch.Tensor | None, source: UpdateSource) -> torch.Tensor | None:
    if reference is None:
        return None
    if reference.dim() != 1 or reference.shape[0] != source.m:
        raise InvalidUpdatesError(
            f"reference must be a 1-D tensor of {source.m} coordinates, got shape "
            f"{tuple(reference.shape)}"
        )
    start = reference.to(device=source.device, dtype=torch.float32)
    require_finite(start, "the reference")
    return start
