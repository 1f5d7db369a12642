"""Participant selection, reproducible by run seed and round.

Two selectors: trust-weighted sampling of a fixed count with over-selection
(the default), and Poisson sampling at rate q for runs with differential
privacy, which is what the accountant's amplification by sampling assumes.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from fedmesh.services.coordinator.nodes import Node

_POISSON_PURPOSE = "fedmesh/coordinator/poisson-selection/v1"


def select_participants(
    eligible: Sequence[Node], count: int, seed: int, round_no: int
) -> list[str]:
    """Pick ``count`` distinct nodes, each draw weighted by trust (Efraimidis–Spirakis keys).

    The same eligible set, seed and round always give the same participants.
    """
    rng = random.Random(f"{seed}:{round_no}")
    ordered = sorted(eligible, key=lambda n: n.node_id)
    keyed = [(rng.random() ** (1.0 / max(node.trust, 1e-9)), node.node_id) for node in ordered]
    keyed.sort(reverse=True)
    return sorted(node_id for _, node_id in keyed[:count])


def poisson_participants(
    eligible: Sequence[Node], rate: float, seed: int, round_no: int
) -> list[str]:
    """Each eligible node independently with probability ``rate`` (Poisson sampling), sorted.

    Trust, over-selection and the participant cap play no part: the count is
    Binomial(len(eligible), rate). A node's draw is a uniform derived from
    (seed, round, node id) alone, so it is reproducible and does not depend on
    which other nodes are eligible.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"sampling rate is {rate}; expected a value in [0, 1]")
    return sorted(
        node.node_id for node in eligible if _uniform(seed, round_no, node.node_id) < rate
    )


def _uniform(seed: int, round_no: int, node_id: str) -> float:
    """A uniform in [0, 1) from 53 bits of SHA-256 over the purpose, seed, round and node."""
    digest = hashlib.sha256(f"{_POISSON_PURPOSE}|{seed}|{round_no}|{node_id}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)
