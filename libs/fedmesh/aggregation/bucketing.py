"""Bucketing (Karimireddy, He & Jaggi, ICLR 2022): average random buckets before any rule.

The updates are shuffled with a seeded permutation and cut into buckets of s
(the last may be smaller); a rule then runs over the bucket means. f Byzantine
updates can spoil at most f buckets, while the bucket means of honest updates
are less spread, which is what helps on non-IID data.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from fedmesh.aggregation.source import UpdateSource, check_updates, check_weights


@dataclass(frozen=True)
class Buckets:
    """The result of bucketing: bucket means (k×m), their weights and their members."""

    means: torch.Tensor
    weights: tuple[float, ...]
    members: tuple[tuple[int, ...], ...]


def bucket_members(n: int, bucket_size: int, seed: int) -> tuple[tuple[int, ...], ...]:
    """Split 0..n−1 into buckets of `bucket_size` after a permutation seeded by `seed`."""
    if bucket_size < 1:
        raise ValueError(f"bucket_size must be ≥ 1, got {bucket_size}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator).tolist()
    return tuple(
        tuple(sorted(order[start : start + bucket_size])) for start in range(0, n, bucket_size)
    )


def mixing_matrix(
    members: tuple[tuple[int, ...], ...], weights: Sequence[float] | None, n: int
) -> tuple[torch.Tensor, tuple[float, ...]]:
    """The k×n matrix whose rows average each bucket (by weight), and each bucket's weight."""
    given = [1.0] * n if weights is None else list(weights)
    matrix = torch.zeros(len(members), n, dtype=torch.float32)
    totals = []
    for bucket, indices in enumerate(members):
        total = sum(given[i] for i in indices)
        for i in indices:
            matrix[bucket, i] = given[i] / total
        totals.append(total)
    return matrix, tuple(totals)


def bucketing(
    updates: torch.Tensor,
    weights: Sequence[float] | None,
    bucket_size: int,
    seed: int,
) -> Buckets:
    """Bucket the rows of `updates` and return the bucket means (weighted when weights given)."""
    matrix = check_updates(updates)
    members = bucket_members(matrix.shape[0], bucket_size, seed)
    mixing, totals = mixing_matrix(
        members, check_weights(weights, matrix.shape[0]), matrix.shape[0]
    )
    return Buckets(mixing.to(matrix.device) @ matrix, totals, members)


class BucketedSource:
    """An `UpdateSource` whose updates are the bucket means of another source."""

    def __init__(self, inner: UpdateSource, bucket_size: int, seed: int) -> None:
        self._inner = inner
        self.members = bucket_members(inner.n, bucket_size, seed)
        mixing, self._weights = mixing_matrix(self.members, inner.weights, inner.n)
        self._mixing = mixing.to(inner.device)

    @property
    def n(self) -> int:
        """Number of buckets."""
        return len(self.members)

    @property
    def m(self) -> int:
        """Coordinates per update."""
        return self._inner.m

    @property
    def weights(self) -> tuple[float, ...]:
        """Each bucket's total weight."""
        return self._weights

    @property
    def device(self) -> torch.device:
        """Where the blocks live."""
        return self._inner.device

    def iter_blocks(self, block_size: int) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (start, k×b block of bucket means) over the coordinates, in order."""
        for start, block in self._inner.iter_blocks(block_size):
            yield start, self._mixing @ block
