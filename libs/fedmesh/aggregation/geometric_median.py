"""Geometric median by smoothed Weiszfeld iterations (RFA, Pillutla et al., 2022).

Every iterate z = Σ c_i x_i lies in the span of the updates, so its distances
to them follow from the Gram matrix: the iterations cost O(n²) each and the
updates are read twice in all (Gram, then the output).
"""

from __future__ import annotations

import math

import torch

from fedmesh.aggregation.gram import Geometry, combine, geometry
from fedmesh.aggregation.result import AggregationResult, UpdateEvidence
from fedmesh.aggregation.source import TensorSource, UpdateSource, default_block_size


def geometric_median(
    updates: torch.Tensor,
    smoothing: float = 1e-6,
    iterations: int = 1000,
    tolerance: float = 1e-6,
) -> AggregationResult:
    """The point minimising Σ_i max(ν, ‖z − x_i‖)-smoothed distances to the updates."""
    source = TensorSource(updates)
    block_size = default_block_size(source.n, source.device)
    return geometric_median_source(source, smoothing, iterations, tolerance, block_size)


def weiszfeld(
    shape: Geometry, smoothing: float, iterations: int, tolerance: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Smoothed Weiszfeld in coefficient space: (coefficients of z, distances ‖x_i − z‖).

    Starts from the mean and stops when a step moves z by less than `tolerance`
    times the median distance to the updates (a scale that far-away Byzantine
    updates cannot inflate), when the smoothed objective stops decreasing, or
    after `iterations` steps.
    """
    n = shape.gram.shape[0]
    coefficients = torch.full((n,), 1.0 / n, dtype=torch.float64)
    distances = shape.distances_to(coefficients)
    objective = _smoothed_objective(distances, smoothing)
    for _ in range(iterations):
        inverse = 1.0 / distances.clamp(min=smoothing)
        candidate = inverse / inverse.sum()
        candidate_distances = shape.distances_to(candidate)
        candidate_objective = _smoothed_objective(candidate_distances, smoothing)
        if candidate_objective > objective:
            break
        step = candidate - coefficients
        moved = math.sqrt(max(float(step @ shape.gram @ step), 0.0))
        coefficients, distances, objective = candidate, candidate_distances, candidate_objective
        if moved <= tolerance * float(distances.median()):
            break
    return coefficients, distances


def geometric_median_source(
    source: UpdateSource, smoothing: float, iterations: int, tolerance: float, block_size: int
) -> AggregationResult:
    """The geometric median over a block source."""
    if smoothing <= 0 or iterations < 1 or tolerance <= 0:
        raise ValueError(
            "smoothing and tolerance must be > 0 and iterations ≥ 1, got "
            f"smoothing={smoothing}, iterations={iterations}, tolerance={tolerance}"
        )
    coefficients, distances = weiszfeld(
        geometry(source, block_size), smoothing, iterations, tolerance
    )
    aggregate = combine(source, coefficients, block_size)
    evidence = [
        UpdateEvidence(
            i,
            float(distances[i]),
            excluded=False,
            clipped=False,
            reason=(
                f"distance {float(distances[i]):.6g} to the geometric median; "
                f"Weiszfeld weight {float(coefficients[i]):.3g}"
            ),
        )
        for i in range(source.n)
    ]
    return AggregationResult(aggregate, evidence, "geometric_median")


def _smoothed_objective(distances: torch.Tensor, smoothing: float) -> float:
    # RFA's smoothing: below ν the distance is replaced by the quadratic d²/2ν + ν/2.
    quadratic = distances.square() / (2 * smoothing) + smoothing / 2
    return float(torch.where(distances >= smoothing, distances, quadratic).sum())
