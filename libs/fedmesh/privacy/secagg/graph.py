"""The SecAgg+ communication graph: a Harary graph over a seeded random ordering of the nodes."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

_GRAPH_PURPOSE = b"fedmesh/secagg/v1/graph"


@dataclass(frozen=True)
class NeighbourGraph:
    """An undirected graph on the participants; a node masks and shares with its neighbours."""

    adjacency: Mapping[int, frozenset[int]]

    @property
    def nodes(self) -> frozenset[int]:
        """All participants."""
        return frozenset(self.adjacency)

    def neighbours(self, node: int) -> frozenset[int]:
        """The neighbours of `node`."""
        return self.adjacency[node]

    def components(self, within: Iterable[int]) -> list[frozenset[int]]:
        """The connected components of the subgraph induced on `within`."""
        remaining = set(within)
        found: list[frozenset[int]] = []
        while remaining:
            frontier = [remaining.pop()]
            component = set(frontier)
            while frontier:
                reachable = self.adjacency[frontier.pop()] & remaining
                remaining -= reachable
                component |= reachable
                frontier.extend(reachable)
            found.append(frozenset(component))
        return found


def default_degree(num_nodes: int) -> int:
    """k = O(log n): the even number 2·⌈log2 n⌉, or n − 1 (a complete graph) if that is smaller."""
    if num_nodes < 2:
        raise ValueError(f"secure aggregation needs at least 2 nodes, got {num_nodes}")
    return min(num_nodes - 1, 2 * math.ceil(math.log2(num_nodes)))


def degree_for_dropout(num_nodes: int, dropout_rate: float, failure_probability: float) -> int:
    """The smallest even k whose majority threshold survives independent dropouts at `dropout_rate`.

    With t = ⌊k/2⌋ + 1 a node's secrets are lost when more than k − t of its k
    neighbours drop. The union bound n·P[Binomial(k, rate) > k − t] must stay
    at most `failure_probability`; n − 1 (complete graph) caps the answer.
    """
    if num_nodes < 2:
        raise ValueError(f"secure aggregation needs at least 2 nodes, got {num_nodes}")
    if not 0.0 <= dropout_rate < 0.5:
        raise ValueError(
            f"dropout_rate must be in [0, 0.5) for a majority threshold, got {dropout_rate}"
        )
    if not 0.0 < failure_probability < 1.0:
        raise ValueError(f"failure_probability must be in (0, 1), got {failure_probability}")
    for degree in range(2, num_nodes - 1, 2):
        tolerated = degree - (degree // 2 + 1)
        tail = sum(
            math.comb(degree, lost) * dropout_rate**lost * (1 - dropout_rate) ** (degree - lost)
            for lost in range(tolerated + 1, degree + 1)
        )
        if num_nodes * tail <= failure_probability:
            return degree
    return num_nodes - 1


def harary_graph(participants: Sequence[int], degree: int, seed: bytes) -> NeighbourGraph:
    """The Harary graph H(k, n) over the participants in an order drawn from `seed`.

    Position i is joined to positions i ± 1 … i ± ⌊k/2⌋ on a ring, and for odd
    k also to the opposite position i + n/2 (n must then be even). k ≥ n − 1
    gives the complete graph, i.e. the original SecAgg of Bonawitz et al.
    The seed is public round randomness: every party derives the same graph.
    """
    count = len(participants)
    if len(set(participants)) != count:
        raise ValueError("participants must be distinct")
    if count < 2:
        raise ValueError(f"secure aggregation needs at least 2 nodes, got {count}")
    if degree < 1:
        raise ValueError(f"degree must be >= 1, got {degree}")
    if degree >= count - 1:
        every = frozenset(participants)
        return NeighbourGraph({node: every - {node} for node in participants})
    if degree % 2 == 1 and count % 2 == 1:
        raise ValueError(f"an odd degree ({degree}) needs an even number of nodes, got {count}")
    order = sorted(participants)
    digest = hashlib.sha256(_GRAPH_PURPOSE + seed).digest()
    random.Random(int.from_bytes(digest, "big")).shuffle(order)
    adjacency: dict[int, set[int]] = {node: set() for node in order}
    offsets = list(range(1, degree // 2 + 1))
    if degree % 2 == 1:
        offsets.append(count // 2)
    for position, node in enumerate(order):
        for offset in offsets:
            other = order[(position + offset) % count]
            adjacency[node].add(other)
            adjacency[other].add(node)
    return NeighbourGraph({node: frozenset(peers) for node, peers in adjacency.items()})
