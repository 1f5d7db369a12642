"""Coordinate-wise median and trimmed mean (Yin et al., ICML 2018)."""

from __future__ import annotations

import torch

from fedmesh.aggregation.errors import InsufficientUpdatesError
from fedmesh.aggregation.evidence import OutsideCounter, trimmed_share_evidence
from fedmesh.aggregation.result import AggregationResult
from fedmesh.aggregation.sorting_network import OrderStatistics
from fedmesh.aggregation.source import (
    TensorSource,
    UpdateSource,
    check_block_size,
    default_block_size,
    require_finite,
)


def coordinate_median(updates: torch.Tensor) -> AggregationResult:
    """The median of every coordinate (the mean of the two middle values when n is even)."""
    source = TensorSource(updates)
    return coordinate_median_source(source, default_block_size(source.n, source.device))


def trimmed_mean(updates: torch.Tensor, trim: int) -> AggregationResult:
    """At every coordinate, the mean after removing the `trim` largest and `trim` smallest."""
    source = TensorSource(updates)
    return trimmed_mean_source(source, trim, default_block_size(source.n, source.device))


def coordinate_median_source(source: UpdateSource, block_size: int) -> AggregationResult:
    """The coordinate-wise median over a block source: a trimmed mean keeping 1 or 2 values."""
    return _trimmed(source, (source.n - 1) // 2, block_size, "median")


def trimmed_mean_source(source: UpdateSource, trim: int, block_size: int) -> AggregationResult:
    """The coordinate-wise trimmed mean over a block source."""
    if trim < 0:
        raise ValueError(f"trim must be ≥ 0, got {trim}")
    if source.n < 2 * trim + 1:
        raise InsufficientUpdatesError(
            f"trimmed_mean needs n ≥ 2·trim+1 = {2 * trim + 1} updates for trim={trim}, "
            f"got n={source.n}"
        )
    return _trimmed(source, trim, block_size, "trimmed_mean")


def _trimmed(source: UpdateSource, trim: int, block_size: int, rule: str) -> AggregationResult:
    check_block_size(block_size)
    n = source.n
    kept = n - 2 * trim
    statistics = OrderStatistics(n, (trim, n - 1 - trim), block_size, source.device)
    outside = OutsideCounter(n, block_size, source.device)
    aggregate = torch.empty(source.m, dtype=torch.float32, device=source.device)
    for start, block in source.iter_blocks(block_size):
        low, high = statistics.select(block)
        target = aggregate[start : start + block.shape[1]]
        clamped = outside.add(block, low, high)
        if kept <= 2:
            # The kept values are exactly the ranks `trim` and n−1−trim.
            torch.add(low, high, out=target).div_(2)
        else:
            # Clamping sends the `trim` lowest values to `low` and the `trim` highest to
            # `high` and leaves the kept ones alone, so Σ clamp = Σ kept + trim·(low + high).
            # Every term lies within the kept range: no cancellation against outliers.
            torch.sum(clamped, dim=0, out=target)
            target.sub_(low + high, alpha=trim).div_(kept)
    require_finite(aggregate, f"the {rule} aggregate")
    shares = outside.shares(source.m)
    what = "median" if rule == "median" else f"trimmed mean (trim {trim} per side)"
    return AggregationResult(aggregate, trimmed_share_evidence(shares, what, source.m), rule)
