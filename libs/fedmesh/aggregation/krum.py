"""Krum and Multi-Krum (Blanchard et al., NeurIPS 2017), from squared pairwise distances."""

from __future__ import annotations

import torch

from fedmesh.aggregation.gram import combine, geometry
from fedmesh.aggregation.result import AggregationResult, UpdateEvidence
from fedmesh.aggregation.source import TensorSource, UpdateSource, default_block_size
from fedmesh.aggregation.spec import Rule, RuleSpec, check_participants


def krum_scores(squared_distances: torch.Tensor, f: int) -> torch.Tensor:
    """Each update's Krum score: the sum of squared distances to its n−f−2 nearest others."""
    n = squared_distances.shape[0]
    if n - f - 2 < 1:
        raise ValueError(f"Krum scores need n − f − 2 ≥ 1 neighbours, got n={n}, f={f}")
    return nearest_sums(squared_distances, n - f - 2)


def nearest_sums(squared_distances: torch.Tensor, neighbours: int) -> torch.Tensor:
    """For each row, the sum of its `neighbours` smallest squared distances to the others."""
    others = squared_distances.clone()
    others.fill_diagonal_(float("inf"))
    return torch.topk(others, neighbours, dim=1, largest=False).values.sum(dim=1)


def krum_order(scores: torch.Tensor, squared_distances: torch.Tensor) -> list[int]:
    """Indices from the lowest Krum score up.

    Exact ties (the two members of the closest pair when Krum looks at one
    neighbour) go to the update nearer to all the others, so the choice does
    not depend on the order the updates arrived in.
    """
    totals = squared_distances.sum(dim=1).tolist()
    values = scores.tolist()
    return sorted(range(len(values)), key=lambda i: (values[i], totals[i], i))


def krum(updates: torch.Tensor, f: int) -> AggregationResult:
    """The update with the lowest Krum score; the others are excluded unless they tie it."""
    source = TensorSource(updates)
    return krum_source(source, f, default_block_size(source.n, source.device))


def multi_krum(updates: torch.Tensor, f: int, m: int | None = None) -> AggregationResult:
    """The mean of the m updates with the lowest Krum scores (m defaults to n − f)."""
    source = TensorSource(updates)
    return multi_krum_source(source, f, m, default_block_size(source.n, source.device))


def krum_source(source: UpdateSource, f: int, block_size: int) -> AggregationResult:
    """Krum over a block source: one pass for the Gram matrix, one to copy the winner."""
    check_participants(RuleSpec(Rule.KRUM, f=f), source.n)
    distances = geometry(source, block_size).squared_distances()
    return _select(source, krum_scores(distances, f), distances, 1, f, block_size, "krum")


def multi_krum_source(
    source: UpdateSource, f: int, m: int | None, block_size: int
) -> AggregationResult:
    """Multi-Krum over a block source: scores from the Gram matrix, then the mean of the best m."""
    check_participants(RuleSpec(Rule.MULTI_KRUM, f=f, multi_krum_m=m), source.n)
    keep = source.n - f if m is None else m
    distances = geometry(source, block_size).squared_distances()
    return _select(source, krum_scores(distances, f), distances, keep, f, block_size, "multi_krum")


def _select(
    source: UpdateSource,
    scores: torch.Tensor,
    squared_distances: torch.Tensor,
    keep: int,
    f: int,
    block_size: int,
    rule: str,
) -> AggregationResult:
    chosen = torch.tensor(krum_order(scores, squared_distances)[:keep])
    coefficients = torch.zeros(source.n, dtype=torch.float64)
    coefficients[chosen] = 1.0 / keep
    aggregate = combine(source, coefficients, block_size)
    cutoff = float(scores[chosen[-1]])
    neighbours = source.n - f - 2
    selected = set(chosen.tolist())
    evidence = []
    for index in range(source.n):
        score = float(scores[index])
        excluded = False
        if index in selected:
            reason = (
                f"selected: Krum score {score:.6g} (squared distances to its "
                f"{neighbours} nearest) among the {keep} lowest"
            )
        elif score > cutoff:
            excluded = True
            reason = (
                f"not selected: Krum score {score:.6g} above the {keep} lowest "
                f"(cut-off {cutoff:.6g})"
            )
        else:
            reason = (
                f"left out on a tie: Krum score {score:.6g} equals the cut-off, "
                "so no evidence against it"
            )
        evidence.append(UpdateEvidence(index, score, excluded, False, reason))
    return AggregationResult(aggregate, evidence, rule)
