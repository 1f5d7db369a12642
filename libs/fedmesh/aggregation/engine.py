"""One entry point for every rule: `aggregate` in memory, `aggregate_source` over blocks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from fedmesh.aggregation.bucketing import BucketedSource
from fedmesh.aggregation.bulyan import bulyan_source
from fedmesh.aggregation.centered_clipping import centered_clipping_source
from fedmesh.aggregation.coordinatewise import coordinate_median_source, trimmed_mean_source
from fedmesh.aggregation.fedavg import fedavg_source
from fedmesh.aggregation.geometric_median import geometric_median_source
from fedmesh.aggregation.krum import krum_source, multi_krum_source
from fedmesh.aggregation.norm_bounding import norm_bounding_source
from fedmesh.aggregation.result import AggregationResult, UpdateEvidence
from fedmesh.aggregation.source import (
    TensorSource,
    UpdateSource,
    check_block_size,
    default_block_size,
)
from fedmesh.aggregation.spec import Rule, RuleSpec, check_participants


def aggregate(
    spec: RuleSpec,
    updates: torch.Tensor,
    weights: Sequence[float] | None = None,
    reference: torch.Tensor | None = None,
) -> AggregationResult:
    """Aggregate the rows of `updates` (n×m) with `spec`'s rule, bucketing first if asked.

    `weights` (sample counts) weigh FedAvg and norm bounding, and the bucket
    means; the robust rules treat updates equally, since a Byzantine node
    reports its own count. `reference` is centered clipping's starting point.
    """
    source = TensorSource(updates, weights)
    return aggregate_source(spec, source, default_block_size(source.n, source.device), reference)


def aggregate_source(
    spec: RuleSpec,
    source: UpdateSource,
    block_size: int,
    reference: torch.Tensor | None = None,
) -> AggregationResult:
    """Aggregate a block source without ever holding the whole n×m matrix."""
    check_block_size(block_size)
    check_participants(spec, source.n)
    if spec.bucket_size == 0:
        return _run_rule(spec, source, block_size, reference)
    buckets = BucketedSource(source, spec.bucket_size, spec.seed)
    inner = _run_rule(spec, buckets, block_size, reference)
    return replace(
        inner,
        evidence=_per_update(inner.evidence, buckets.members, source.n),
        buckets=buckets.members,
        bucket_evidence=inner.evidence,
    )


def _run_rule(
    spec: RuleSpec, source: UpdateSource, block_size: int, reference: torch.Tensor | None
) -> AggregationResult:
    match spec.rule:
        case Rule.FEDAVG:
            return fedavg_source(source, block_size)
        case Rule.KRUM:
            return krum_source(source, spec.f, block_size)
        case Rule.MULTI_KRUM:
            return multi_krum_source(source, spec.f, spec.multi_krum_m, block_size)
        case Rule.MEDIAN:
            return coordinate_median_source(source, block_size)
        case Rule.TRIMMED_MEAN:
            return trimmed_mean_source(source, spec.trim_count, block_size)
        case Rule.BULYAN:
            return bulyan_source(source, spec.f, block_size)
        case Rule.GEOMETRIC_MEDIAN:
            return geometric_median_source(
                source,
                spec.smoothing,
                spec.weiszfeld_iterations,
                spec.weiszfeld_tolerance,
                block_size,
            )
        case Rule.CENTERED_CLIPPING:
            return centered_clipping_source(
                source, reference, spec.tau, spec.clipping_iterations, block_size
            )
        case Rule.NORM_BOUNDING:
            return norm_bounding_source(source, spec.norm_bound, block_size)


def _per_update(
    bucket_evidence: list[UpdateEvidence], members: tuple[tuple[int, ...], ...], n: int
) -> list[UpdateEvidence]:
    evidence: list[UpdateEvidence | None] = [None] * n
    for bucket, (indices, verdict) in enumerate(zip(members, bucket_evidence, strict=True)):
        for index in indices:
            evidence[index] = UpdateEvidence(
                index,
                verdict.score,
                verdict.excluded,
                verdict.clipped,
                f"in bucket {bucket} with updates {list(indices)}: {verdict.reason}",
                bucket,
            )
    return [e for e in evidence if e is not None]
