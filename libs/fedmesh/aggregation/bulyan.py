"""Bulyan (El Mhamdi et al., ICML 2018): recursive Krum, then a trimmed mean around the median."""

from __future__ import annotations

import torch

from fedmesh.aggregation.evidence import OutsideCounter
from fedmesh.aggregation.gram import geometry
from fedmesh.aggregation.krum import krum_order, krum_scores, nearest_sums
from fedmesh.aggregation.result import AggregationResult, UpdateEvidence
from fedmesh.aggregation.sorting_network import OrderStatistics
from fedmesh.aggregation.source import (
    TensorSource,
    UpdateSource,
    check_block_size,
    default_block_size,
    require_finite,
)
from fedmesh.aggregation.spec import Rule, RuleSpec, check_participants


def bulyan(updates: torch.Tensor, f: int) -> AggregationResult:
    """Bulyan with f Byzantine updates: n ≥ 4f+3, θ = n−2f chosen, β = θ−2f averaged."""
    source = TensorSource(updates)
    return bulyan_source(source, f, default_block_size(source.n, source.device))


def recursive_krum(squared_distances: torch.Tensor, f: int, count: int) -> list[int]:
    """Bulyan's selection: apply Krum to the remaining updates `count` times.

    Each round removes the Krum winner of what remains. Near the end, when fewer
    than f+3 remain, Krum's n−f−2 neighbours are clamped to 1 (a single update
    left is taken as it is); ties are broken as in `krum_order`.
    """
    remaining = list(range(squared_distances.shape[0]))
    chosen: list[int] = []
    for _ in range(count):
        if len(remaining) == 1:
            chosen.append(remaining.pop())
            break
        index = torch.tensor(remaining)
        sub = squared_distances.index_select(0, index).index_select(1, index)
        scores = nearest_sums(sub, max(1, len(remaining) - f - 2))
        chosen.append(remaining.pop(krum_order(scores, sub)[0]))
    return chosen


def bulyan_source(source: UpdateSource, f: int, block_size: int) -> AggregationResult:
    """Bulyan over a block source: selection from the Gram matrix, then one coordinate pass."""
    check_participants(RuleSpec(Rule.BULYAN, f=f), source.n)
    check_block_size(block_size)
    distances = geometry(source, block_size).squared_distances()
    theta = source.n - 2 * f
    beta = theta - 2 * f
    chosen = recursive_krum(distances, f, theta)
    rows = torch.tensor(chosen, device=source.device)
    statistics = OrderStatistics(theta, range(theta), block_size, source.device)
    ranked = torch.empty(theta, block_size, dtype=torch.float32, device=source.device)
    offsets = torch.arange(beta, device=source.device)[:, None]
    aggregate = torch.empty(source.m, dtype=torch.float32, device=source.device)
    outside = OutsideCounter(theta, block_size, source.device)
    for start, block in source.iter_blocks(block_size):
        width = block.shape[1]
        picked = block.index_select(0, rows)
        for rank, row in enumerate(statistics.select(picked)):
            ranked[rank, :width].copy_(row)
        ordered = ranked[:, :width]
        first = _closest_window(ordered, beta)
        window = torch.gather(ordered, 0, first.long() + offsets)
        torch.mean(window, dim=0, out=aggregate[start : start + width])
        outside.add(picked, window[0], window[-1])
    require_finite(aggregate, "the bulyan aggregate")
    first_scores = krum_scores(distances, f)
    return AggregationResult(
        aggregate,
        _evidence(source.m, chosen, outside.shares(source.m), first_scores, beta),
        "bulyan",
    )


def _closest_window(ordered: torch.Tensor, beta: int) -> torch.Tensor:
    """Per column of the sorted θ×b `ordered`, the first rank of the β values closest to the median.

    Those β values are the window of β consecutive ranks whose farthest member
    is nearest to the median; ties go to the lower window. The result holds
    whole numbers as float32, since float arithmetic is vectorised and boolean
    masks are not.
    """
    count = ordered.shape[0]
    if count % 2:
        median = ordered[count // 2]
    else:
        median = (ordered[count // 2 - 1] + ordered[count // 2]) / 2
    best = torch.maximum(median - ordered[0], ordered[beta - 1] - median)
    first = torch.zeros_like(best)
    closer = torch.empty_like(best)
    for start in range(1, count - beta + 1):
        spread = torch.maximum(median - ordered[start], ordered[start + beta - 1] - median)
        torch.lt(spread, best, out=closer)
        first.addcmul_(closer, start - first)
        torch.minimum(best, spread, out=best)
    return first


def _evidence(
    m: int, chosen: list[int], shares: list[float], scores: torch.Tensor, beta: int
) -> list[UpdateEvidence]:
    position = {index: rank for rank, index in enumerate(chosen)}
    evidence = []
    for index in range(scores.shape[0]):
        krum = float(scores[index])
        if index not in position:
            reason = (
                f"not among the {len(chosen)} chosen by recursive Krum "
                f"(first-round Krum score {krum:.6g})"
            )
            evidence.append(UpdateEvidence(index, 1.0, True, False, reason))
            continue
        share = shares[position[index]]
        excluded = share >= 1.0
        where = "every one" if excluded else f"{share:.1%}"
        reason = (
            f"chosen by recursive Krum (round {position[index] + 1}); value outside the "
            f"{beta} closest to the median at {where} of {m} coordinates"
        )
        evidence.append(UpdateEvidence(index, share, excluded, False, reason))
    return evidence
