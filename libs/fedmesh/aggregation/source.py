"""Where a rule reads updates from: an n×m matrix in memory or coordinate blocks of a spool."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import torch

from fedmesh.aggregation.errors import InvalidUpdatesError

# Elements per block: 1 Mi floats (4 MiB) keep a CPU block in the last-level
# cache; a GPU takes far larger blocks before the launch overhead stops mattering.
_CPU_BLOCK_ELEMENTS = 1 << 20
_GPU_BLOCK_ELEMENTS = 1 << 28


@runtime_checkable
class UpdateSource(Protocol):
    """n updates of m coordinates each, read as column blocks.

    `weights` holds one positive weight per update (sample counts), or None for
    equal weights. `iter_blocks(b)` yields `(start, block)` in increasing order,
    covering 0..m once, each block an n×b' float32 tensor with b' ≤ b; blocks may
    be views, so a consumer never writes into them.
    """

    @property
    def n(self) -> int:
        """Number of updates."""
        ...

    @property
    def m(self) -> int:
        """Coordinates per update."""
        ...

    @property
    def weights(self) -> Sequence[float] | None:
        """One weight per update, or None for equal weights."""
        ...

    @property
    def device(self) -> torch.device:
        """Where the blocks live."""
        ...

    def iter_blocks(self, block_size: int) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (start, n×b block) over the coordinates, in order."""
        ...


class TensorSource:
    """An `UpdateSource` over an n×m tensor already in memory (CPU or GPU)."""

    def __init__(self, updates: torch.Tensor, weights: Sequence[float] | None = None) -> None:
        self._updates = check_updates(updates)
        self._weights = check_weights(weights, self._updates.shape[0])

    @property
    def n(self) -> int:
        """Number of updates."""
        return int(self._updates.shape[0])

    @property
    def m(self) -> int:
        """Coordinates per update."""
        return int(self._updates.shape[1])

    @property
    def weights(self) -> tuple[float, ...] | None:
        """One weight per update, or None for equal weights."""
        return self._weights

    @property
    def device(self) -> torch.device:
        """Where the updates live."""
        return self._updates.device

    @property
    def updates(self) -> torch.Tensor:
        """The whole n×m float32 matrix."""
        return self._updates

    def iter_blocks(self, block_size: int) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (start, n×b view) over the coordinates, in order."""
        check_block_size(block_size)
        for start in range(0, self.m, block_size):
            yield start, self._updates[:, start : start + block_size]


def check_updates(updates: torch.Tensor) -> torch.Tensor:
    """Return `updates` as an n×m float32 tensor, or raise `InvalidUpdatesError`."""
    if not isinstance(updates, torch.Tensor):
        raise InvalidUpdatesError(f"updates must be a torch.Tensor, got {type(updates).__name__}")
    if updates.dim() != 2:
        raise InvalidUpdatesError(
            f"updates must be a 2-D n×m tensor (one row per update), got shape "
            f"{tuple(updates.shape)}"
        )
    if updates.shape[0] < 1 or updates.shape[1] < 1:
        raise InvalidUpdatesError(
            f"updates must hold at least one update of at least one coordinate, got shape "
            f"{tuple(updates.shape)}"
        )
    if not updates.is_floating_point():
        raise InvalidUpdatesError(f"updates must be floating point, got {updates.dtype}")
    return updates.to(torch.float32)


def check_weights(weights: Sequence[float] | None, n: int) -> tuple[float, ...] | None:
    """Return the weights as a tuple of floats, or raise `InvalidUpdatesError`."""
    if weights is None:
        return None
    values = tuple(float(w) for w in weights)
    if len(values) != n:
        raise InvalidUpdatesError(
            f"weights must hold one value per update ({n}), got {len(values)}"
        )
    bad = [w for w in values if not (math.isfinite(w) and w > 0)]
    if bad:
        raise InvalidUpdatesError(f"weights must be finite and > 0, got {bad[0]}")
    return values


def check_block_size(block_size: int) -> None:
    """Raise `ValueError` unless the block size is a positive integer."""
    if block_size < 1:
        raise ValueError(f"block_size must be ≥ 1 coordinate, got {block_size}")


def default_block_size(n: int, device: torch.device) -> int:
    """Coordinates per block for n updates: cache-sized on a CPU, large on a GPU."""
    elements = _CPU_BLOCK_ELEMENTS if device.type == "cpu" else _GPU_BLOCK_ELEMENTS
    return max(1024, elements // max(n, 1))


def require_finite(value: torch.Tensor, what: str) -> None:
    """Raise `InvalidUpdatesError` when `value` holds NaN or Inf."""
    # min and max propagate NaN and expose ±Inf in one read-only pass, without the
    # boolean temporary (and its slow reduction) that isfinite().all() needs.
    low, high = torch.aminmax(value)
    if not math.isfinite(float(low)) or not math.isfinite(float(high)):
        raise InvalidUpdatesError(
            f"{what} is not finite: the updates contain NaN or Inf, or overflow float32"
        )


def normalised_weights(source: UpdateSource) -> torch.Tensor:
    """The source's weights as a float64 CPU vector summing to 1 (equal when None)."""
    if source.weights is None:
        return torch.full((source.n,), 1.0 / source.n, dtype=torch.float64)
    weights = torch.tensor(list(source.weights), dtype=torch.float64)
    return weights / weights.sum()
