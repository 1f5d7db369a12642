"""Shortest-hop routing towards the nearest gateway, and sums/extremes along the routes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import shortest_path

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]


@dataclass(frozen=True)
class RoutingTree:
    """Each node's next hop towards its gateway; ``parent`` is -1 at gateways and for nodes
    without a route, ``depth`` is the hop count (-1 without a route)."""

    parent: Ints
    depth: Ints
    levels: tuple[Ints, ...]
    """Nodes grouped by depth, gateways first."""

    @property
    def reachable(self) -> NDArray[np.bool_]:
        """Nodes with a route to a gateway (gateways included)."""
        result: NDArray[np.bool_] = self.depth >= 0
        return result


def route_to_gateways(
    num_nodes: int, links: Ints, active: NDArray[np.bool_], gateways: NDArray[np.bool_]
) -> RoutingTree:
    """Breadth-first routes from every gateway at once over the active links."""
    live = links[active]
    source = num_nodes  # a virtual root joined to every gateway
    roots = np.flatnonzero(gateways)
    rows = np.concatenate([live[:, 0], np.full(roots.size, source)])
    cols = np.concatenate([live[:, 1], roots])
    graph = coo_matrix(
        (np.ones(rows.size, dtype=np.float64), (rows, cols)), shape=(num_nodes + 1,) * 2
    ).tocsr()
    distance, predecessor = shortest_path(
        graph, directed=False, unweighted=True, indices=source, return_predecessors=True
    )
    hops = distance[:num_nodes]
    reachable = np.isfinite(hops)
    depth = np.where(reachable, hops - 1, -1).astype(np.int64)
    parent = predecessor[:num_nodes].astype(np.int64)
    parent = np.where(reachable & (parent != source), parent, -1)
    top = int(depth.max()) if num_nodes else -1
    order = np.argsort(depth, kind="stable")
    bounds = np.searchsorted(depth[order], np.arange(top + 2))
    levels = tuple(order[bounds[d] : bounds[d + 1]] for d in range(top + 1))
    return RoutingTree(parent=parent, depth=depth, levels=levels)


def sum_towards_gateways(own: Floats, tree: RoutingTree) -> Floats:
    """What each node forwards: its own value plus everything its subtree sends through it.

    Nodes without a route keep only their own value.
    """
    total = own.astype(np.float64, copy=True)
    for level in reversed(tree.levels[1:]):
        np.add.at(total, tree.parent[level], total[level])
    return total


def accumulate_from_gateways(
    at_gateway: Floats, per_hop: Floats, tree: RoutingTree, combine: str
) -> Floats:
    """Combine ``per_hop`` along each node's route, starting from ``at_gateway`` at the root.

    ``combine`` is ``"sum"`` (e.g. latency) or ``"min"`` (e.g. the bottleneck rate);
    nodes without a route get NaN.
    """
    if combine not in ("sum", "min"):
        raise ValueError(f"combine must be 'sum' or 'min'; got {combine!r}")
    result = np.full(per_hop.shape, np.nan)
    if tree.levels:
        result[tree.levels[0]] = at_gateway[tree.levels[0]]
    for level in tree.levels[1:]:
        upstream = result[tree.parent[level]]
        result[level] = (
            upstream + per_hop[level] if combine == "sum" else np.minimum(upstream, per_hop[level])
        )
    return result
