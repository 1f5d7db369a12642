"""Order statistics of every coordinate at once, by a sorting network of elementwise min/max.

Selecting the k-th of n values at each of m coordinates with `torch.sort` or
`torch.kthvalue` runs a scalar algorithm per coordinate. Batcher's odd–even
merge network instead compares whole rows: each comparator is one vectorised
`minimum` and one `maximum` over a cache-sized block, and comparators whose
outputs do not reach the requested ranks are dropped.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

Comparator = tuple[int, int]
# A pruned comparator: rows (low, high) and whether its min and its max are used later.
Step = tuple[int, int, bool, bool]


@functools.lru_cache(maxsize=128)
def comparators(n: int) -> tuple[Comparator, ...]:
    """Batcher's odd–even merge sorting network for n inputs, as (low, high) row pairs."""
    if n < 1:
        raise ValueError(f"a sorting network needs n ≥ 1 inputs, got {n}")
    pairs: list[Comparator] = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return tuple(pairs)


@functools.lru_cache(maxsize=256)
def pruned_steps(n: int, ranks: tuple[int, ...]) -> tuple[Step, ...]:
    """The comparators of `comparators(n)` that the given output ranks depend on."""
    live = set(ranks)
    steps: list[Step] = []
    for low, high in reversed(comparators(n)):
        need_low, need_high = low in live, high in live
        if need_low or need_high:
            steps.append((low, high, need_low, need_high))
            live.update((low, high))
    return tuple(reversed(steps))


class OrderStatistics:
    """Computes chosen ranks (0 = smallest) of every column of n×b blocks.

    The network reads the block's rows where they are and writes its outputs
    into n+1 buffer rows, allocated once for blocks of up to `block_size`
    columns; the rows `select` returns are valid until the next call.
    """

    def __init__(self, n: int, ranks: Sequence[int], block_size: int, device: torch.device) -> None:
        bad = [r for r in ranks if not 0 <= r < n]
        if bad:
            raise ValueError(f"ranks must lie in 0..{n - 1}, got {bad[0]}")
        self._ranks = tuple(ranks)
        self._steps = pruned_steps(n, tuple(sorted(set(ranks))))
        self._buffer = torch.empty(n + 1, block_size, dtype=torch.float32, device=device)

    def select(self, block: torch.Tensor) -> list[torch.Tensor]:
        """The requested ranks of every column of `block` (n×b), one row per rank."""
        width = block.shape[1]
        # A wire holds a row of the block (never written) until a comparator first
        # writes it; from then on it holds a buffer row, reused in place.
        free = list(self._buffer[:, :width].unbind(0))
        rows = list(block.unbind(0))
        owned = [False] * len(rows)
        for low, high, need_low, need_high in self._steps:
            x, y = rows[low], rows[high]
            if need_low:
                smaller = free.pop()
                torch.minimum(x, y, out=smaller)
            if need_high:
                larger = y if owned[high] else free.pop()
                torch.maximum(x, y, out=larger)
                rows[high], owned[high] = larger, True
            if need_low:
                if owned[low]:
                    free.append(x)
                rows[low], owned[low] = smaller, True
        return [rows[r] for r in self._ranks]
