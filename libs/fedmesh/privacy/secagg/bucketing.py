"""Robust + secure aggregation: random buckets of s nodes, each summed by its own SecAgg+ round.

The server learns only each bucket's sum, and a robust rule runs over the
bucket means (Karimireddy et al. 2022 bucketing, composed with Bell et al. 2020).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fedmesh.privacy.secagg.config import SecAggConfig
from fedmesh.privacy.secagg.quantize import FixedPointCodec
from fedmesh.privacy.secagg.server import SecAggResult

_BUCKET_PURPOSE = b"fedmesh/secagg/v1/buckets"


@dataclass(frozen=True)
class BucketPlan:
    """The partition of a round's participants into buckets of s or s + 1 nodes."""

    buckets: tuple[tuple[int, ...], ...]

    def configs(
        self,
        vector_length: int,
        graph_seed: bytes,
        round_context: bytes,
        degree: int | None = None,
        threshold: int | None = None,
        min_survivors: int | None = None,
    ) -> tuple[SecAggConfig, ...]:
        """One SecAgg+ config per bucket; keys, masks and graphs are separated by bucket index."""
        return tuple(
            SecAggConfig.create(
                participants=members,
                vector_length=vector_length,
                graph_seed=graph_seed + b"/bucket/" + str(index).encode(),
                round_context=round_context + b"/bucket/" + str(index).encode(),
                degree=degree,
                threshold=threshold,
                min_survivors=min_survivors,
            )
            for index, members in enumerate(self.buckets)
        )

    def codec(self, clip_range: float) -> FixedPointCodec:
        """The fixed-point codec sized for the largest bucket's sum."""
        return FixedPointCodec(clip_range, max(len(members) for members in self.buckets))


def plan_buckets(participants: Sequence[int], bucket_size: int, seed: bytes) -> BucketPlan:
    """Shuffle with public round randomness and deal into ⌊n/s⌋ buckets of s or s + 1 nodes.

    The remainder is spread over the buckets rather than left as a small one,
    because a bucket's sum is revealed: a bucket of one would reveal an update.
    """
    if len(set(participants)) != len(participants):
        raise ValueError("participants must be distinct")
    if bucket_size < 2:
        raise ValueError(
            f"bucket_size must be >= 2 (a bucket's sum is revealed), got {bucket_size}"
        )
    if len(participants) < bucket_size:
        raise ValueError(
            f"{len(participants)} participants cannot fill one bucket of {bucket_size}"
        )
    order = sorted(participants)
    digest = hashlib.sha256(_BUCKET_PURPOSE + seed).digest()
    random.Random(int.from_bytes(digest, "big")).shuffle(order)
    count = len(order) // bucket_size
    return BucketPlan(tuple(tuple(sorted(order[index::count])) for index in range(count)))


def bucket_means(results: Sequence[SecAggResult], codec: FixedPointCodec) -> torch.Tensor:
    """Decode each bucket's secure sum into the mean of its contributors: shape (buckets, m)."""
    if not results:
        raise ValueError("no bucket results to decode")
    means = [codec.dequantize_mean(result.total, len(result.contributors)) for result in results]
    return torch.stack(means)
