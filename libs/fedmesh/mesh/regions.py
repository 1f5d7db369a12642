"""Federated split: each client holds one connected region of the mesh."""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from fedmesh.mesh.series import TelemetrySeries
from fedmesh.mesh.topology import Mesh, farthest_point_nodes
from fedmesh.model.labels import FAULT_KINDS


@dataclass(frozen=True)
class Region:
    """The nodes one federated client holds: a connected part of the mesh."""

    index: int
    nodes: torch.Tensor
    """Global node ids, long ``[n]``, ascending."""

    @property
    def size(self) -> int:
        """Number of nodes in the region."""
        return int(self.nodes.numel())

    def fault_mix(self, series: TelemetrySeries) -> dict[str, float]:
        """Share of each fault kind among the region's labelled node-steps (empty if none)."""
        kinds = series.fault_kind[:, self.nodes]
        counts = {kind.label: int((kinds == kind).sum()) for kind in FAULT_KINDS}
        total = sum(counts.values())
        return {label: count / total for label, count in counts.items()} if total else {}


def split_regions(source: TelemetrySeries | Mesh, num_clients: int, seed: int) -> list[Region]:
    """Partition the mesh into ``num_clients`` connected regions of similar size.

    Regions grow over radio links from well-spread seed nodes, the smallest first, so each
    is connected and spatially compact; faults are spatially uneven, so each region sees
    its own fault mix (non-IID).
    """
    mesh = source.mesh if isinstance(source, TelemetrySeries) else source
    n = mesh.num_nodes
    if not 1 <= num_clients <= n:
        raise ValueError(f"num_clients must be in [1, {n}] for a {n}-node mesh; got {num_clients}")
    neighbours = _adjacency(n, mesh.links.numpy())
    rng = np.random.default_rng(seed)
    owner = np.full(n, -1, dtype=np.int64)
    frontiers: list[deque[int]] = []
    seeds = farthest_point_nodes(mesh.positions.double().numpy(), num_clients, rng)
    for index, node in enumerate(seeds):
        owner[node] = index
        frontiers.append(deque([node]))
    queue = [(1, index) for index in range(num_clients)]
    heapq.heapify(queue)
    while queue:
        size, index = heapq.heappop(queue)
        grown = _grow(frontiers[index], neighbours, owner, index)
        if grown:
            heapq.heappush(queue, (size + 1, index))
    if bool((owner < 0).any()):
        raise ValueError("the mesh is not connected; every region must be reachable over links")
    return [
        Region(index=index, nodes=torch.from_numpy(np.flatnonzero(owner == index)))
        for index in range(num_clients)
    ]


def _grow(
    frontier: deque[int], neighbours: list[NDArray[np.int64]], owner: NDArray[np.int64], index: int
) -> bool:
    """Claim one unowned neighbour of the region; False when the region is enclosed."""
    while frontier:
        candidates = neighbours[frontier[0]]
        free = candidates[owner[candidates] < 0]
        if free.size:
            node = int(free[0])
            owner[node] = index
            frontier.append(node)
            return True
        frontier.popleft()
    return False


def _adjacency(n: int, links: NDArray[np.int64]) -> list[NDArray[np.int64]]:
    ends = np.concatenate([links, links[:, ::-1]])
    ends = ends[np.lexsort((ends[:, 1], ends[:, 0]))]
    bounds = np.searchsorted(ends[:, 0], np.arange(n + 1))
    return [ends[bounds[i] : bounds[i + 1], 1] for i in range(n)]
