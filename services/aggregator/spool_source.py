"""Spooled updates as an `UpdateSource`: coordinate blocks read from memory or memory maps.

Only one n×b block is ever materialised, so a round whose updates together
exceed memory still aggregates: the pages of each map are read as the block
moves along and can be evicted behind it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from fedmesh.aggregation.source import check_block_size
from fedmesh.services.aggregator.spool import SpooledUpdate

_FLOAT32 = np.dtype("<f4")


class SpoolSource:
    """n spooled float32 payloads with the same layout, read as n×b column blocks.

    ``scales`` multiplies each update as it is read (DP clipping to the run's norm).
    """

    def __init__(
        self,
        updates: Sequence[SpooledUpdate],
        data_offset: int,
        m: int,
        weights: Sequence[float],
        device: torch.device,
        scales: Sequence[float] | None = None,
    ) -> None:
        for index, update in enumerate(updates):
            expected = data_offset + m * _FLOAT32.itemsize
            if len(update.buffer) != expected:
                raise ValueError(
                    f"spooled update {index} has {len(update.buffer)} bytes; expected {expected}"
                )
        self._updates = updates
        self._data_offset = data_offset
        self._m = m
        self._weights = tuple(weights)
        self._device = device
        self._scales = None if scales is None else torch.tensor(scales, dtype=torch.float32)

    @property
    def n(self) -> int:
        """Number of updates."""
        return len(self._updates)

    @property
    def m(self) -> int:
        """Coordinates per update."""
        return self._m

    @property
    def weights(self) -> tuple[float, ...]:
        """Sample counts, one per update."""
        return self._weights

    @property
    def device(self) -> torch.device:
        """Where the blocks are delivered."""
        return self._device

    def iter_blocks(self, block_size: int) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (start, n×b float32 block) over the coordinates, in order."""
        check_block_size(block_size)
        for start in range(0, self._m, block_size):
            width = min(block_size, self._m - start)
            block = torch.empty(self.n, width, dtype=torch.float32)
            rows = block.numpy()
            offset = self._data_offset + start * _FLOAT32.itemsize
            for row, update in zip(rows, self._updates, strict=True):
                row[:] = np.frombuffer(update.buffer, dtype=_FLOAT32, count=width, offset=offset)
            if self._scales is not None:
                block.mul_(self._scales.unsqueeze(1))
            yield start, block.to(self._device)

    def norms(self, block_size: int) -> list[float]:
        """The L2 norm of each update (float64 accumulation), in one pass over the blocks."""
        squares = torch.zeros(self.n, dtype=torch.float64)
        for _, block in self.iter_blocks(block_size):
            squares += block.to("cpu", torch.float64).square().sum(dim=1)
        return squares.sqrt().tolist()
