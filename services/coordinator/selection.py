"""Trust-weighted participant selection with over-selection, reproducible by seed."""

from __future__ import annotations

import random
from collections.abc import Sequence

from fedmesh.services.coordinator.nodes import Node


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
