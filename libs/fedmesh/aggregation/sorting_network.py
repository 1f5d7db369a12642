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

    The network runs in one (n+1)×b buffer, allocated once for blocks of up to
    `block_size` columns. Which buffer row ends up holding which rank does not
    depend on the data, so `slots` is fixed; the rows `select` returns are views
    into the buffer, valid until the next call.
    """

    def __init__(self, n: int, ranks: Sequence[int], block_size: int, device: torch.device) -> None:
        bad = [r for r in ranks if not 0 <= r < n]
        if bad:
            raise ValueError(f"ranks must lie in 0..{n - 1}, got {bad[0]}")
        self._ranks = tuple(ranks)
        self._steps = pruned_steps(n, tuple(sorted(set(ranks))))
        self._buffer = torch.empty(n + 1, block_size, dtype=torch.float32, device=device)
        self.slots = _final_slots(n, self._steps, self._ranks)

    def buffer(self, width: int) -> torch.Tensor:
        """The (n+1)×width buffer; after `select`, rank `ranks[k]` is in row `slots[k]`."""
        return self._buffer[:, :width]

    def select(self, block: torch.Tensor) -> list[torch.Tensor]:
        """The requested ranks of every column of `block` (n×b), one row per rank."""
        width = block.shape[1]
        buffer = self._buffer[:, :width]
        buffer[:-1].copy_(block)
        rows = list(buffer.unbind(0))
        spare = rows.pop()
        for low, high, need_low, need_high in self._steps:
            x, y = rows[low], rows[high]
            if need_low and need_high:
                torch.minimum(x, y, out=spare)
                torch.maximum(x, y, out=y)
                rows[low], spare = spare, x
            elif need_low:
                torch.minimum(x, y, out=spare)
                rows[low], spare = spare, x
            else:
                torch.maximum(x, y, out=spare)
                rows[high], spare = spare, y
        return [rows[r] for r in self._ranks]


def _final_slots(n: int, steps: tuple[Step, ...], ranks: tuple[int, ...]) -> tuple[int, ...]:
    # Replays `select` on buffer-row numbers instead of data.
    rows = list(range(n))
    spare = n
    for low, high, need_low, _ in steps:
        x, y = rows[low], rows[high]
        if need_low:
            rows[low], spare = spare, x
        else:
            rows[high], spare = spare, y
    return tuple(rows[r] for r in ranks)
