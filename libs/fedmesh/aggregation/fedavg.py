"""Federated averaging (McMahan et al. 2017): the sample-weighted mean, also streamed."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fedmesh.aggregation.errors import InvalidUpdatesError
from fedmesh.aggregation.evidence import kept_in_full
from fedmesh.aggregation.gram import combine
from fedmesh.aggregation.result import AggregationResult
from fedmesh.aggregation.source import (
    TensorSource,
    UpdateSource,
    check_updates,
    default_block_size,
    normalised_weights,
    require_finite,
)


def fedavg(updates: torch.Tensor, weights: Sequence[float] | None = None) -> AggregationResult:
    """Weighted mean Σ w_i x_i / Σ w_i of the rows of `updates` (equal weights when None)."""
    source = TensorSource(updates, weights)
    return fedavg_source(source, default_block_size(source.n, source.device))


def fedavg_source(source: UpdateSource, block_size: int) -> AggregationResult:
    """FedAvg over a block source: one pass, memory O(block) beyond the output."""
    shares = normalised_weights(source)
    aggregate = combine(source, shares, block_size)
    require_finite(aggregate, "the FedAvg aggregate")
    evidence = kept_in_full(source.n, "averaged (FedAvg keeps every update)")
    return AggregationResult(aggregate, evidence, "fedavg")


class StreamingMean:
    """FedAvg one update at a time: memory O(m) whatever the number of updates."""

    def __init__(self, m: int, device: torch.device | str = "cpu") -> None:
        if m < 1:
            raise ValueError(f"m must be ≥ 1 coordinate, got {m}")
        self._sum = torch.zeros(m, dtype=torch.float32, device=device)
        self._total_weight = 0.0
        self._count = 0

    @property
    def count(self) -> int:
        """Updates added so far."""
        return self._count

    def add(self, update: torch.Tensor, weight: float = 1.0) -> None:
        """Add one update (1-D, m coordinates) with its weight (> 0)."""
        row = check_updates(update.reshape(1, -1))[0]
        if row.shape[0] != self._sum.shape[0]:
            raise InvalidUpdatesError(
                f"update has {row.shape[0]} coordinates, expected {self._sum.shape[0]}"
            )
        if not (math.isfinite(weight) and weight > 0):
            raise InvalidUpdatesError(f"weight must be finite and > 0, got {weight}")
        self._sum.add_(row.to(self._sum.device), alpha=weight)
        self._total_weight += weight
        self._count += 1

    def result(self) -> torch.Tensor:
        """The weighted mean of the updates added so far."""
        if self._count == 0:
            raise InvalidUpdatesError("no update was added to the streaming mean")
        mean = self._sum / self._total_weight
        require_finite(mean, "the FedAvg aggregate")
        return mean
