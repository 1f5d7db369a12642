"""The public parameters of one secure-aggregation round, shared by the server and every node."""

from __future__ import annotations

from dataclasses import dataclass, field

from fedmesh.privacy.secagg.graph import NeighbourGraph, default_degree, harary_graph

MAX_NODE_ID = 2**32 - 2


@dataclass(frozen=True)
class SecAggConfig:
    """Participants, vector length, neighbour degree k, Shamir threshold t and minimum survivors.

    `threshold` must be a strict majority of a neighbourhood (t > k/2): then a
    server that tells some neighbours a node dropped and others that it survived
    can never collect t shares of both that node's secrets. `min_survivors` is
    the fewest inputs whose sum may be revealed; with distributed DP noise it
    must be at least the n_min the noise shares were sized for.
    `round_context` (run and round identity) separates every key and mask of
    this round from any other.
    """

    participants: tuple[int, ...]
    vector_length: int
    degree: int
    threshold: int
    min_survivors: int
    graph_seed: bytes
    round_context: bytes
    graph: NeighbourGraph = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        count = len(self.participants)
        if any(not 0 <= node <= MAX_NODE_ID for node in self.participants):
            raise ValueError(f"participant ids must be in [0, {MAX_NODE_ID}]")
        if self.vector_length < 1:
            raise ValueError(f"vector_length must be >= 1, got {self.vector_length}")
        if not self.round_context:
            raise ValueError("round_context must identify the run and round; got empty bytes")
        graph = harary_graph(self.participants, self.degree, self.graph_seed)
        effective_degree = min(self.degree, count - 1)
        if not effective_degree // 2 < self.threshold <= effective_degree:
            raise ValueError(
                f"threshold must be a strict majority of the {effective_degree} neighbours, "
                f"in [{effective_degree // 2 + 1}, {effective_degree}], got {self.threshold}"
            )
        if not 2 <= self.min_survivors <= count:
            raise ValueError(f"min_survivors must be in [2, {count}], got {self.min_survivors}")
        object.__setattr__(self, "graph", graph)

    @classmethod
    def create(
        cls,
        participants: tuple[int, ...],
        vector_length: int,
        graph_seed: bytes,
        round_context: bytes,
        degree: int | None = None,
        threshold: int | None = None,
        min_survivors: int | None = None,
    ) -> SecAggConfig:
        """Defaults: k = `default_degree(n)`, t = ⌊k/2⌋ + 1, min_survivors = max(2, t)."""
        chosen_degree = degree if degree is not None else default_degree(len(participants))
        effective_degree = min(chosen_degree, len(participants) - 1)
        chosen_threshold = threshold if threshold is not None else effective_degree // 2 + 1
        return cls(
            participants=participants,
            vector_length=vector_length,
            degree=chosen_degree,
            threshold=chosen_threshold,
            min_survivors=min_survivors if min_survivors is not None else max(2, chosen_threshold),
            graph_seed=graph_seed,
            round_context=round_context,
        )
