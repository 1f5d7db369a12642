"""Which of a round's exclusions are evidence against a node.

Some rules exclude by construction: Krum keeps one update and drops n−1 every round,
Multi-Krum drops f. Counting every exclusion would punish honest nodes for being
"not the most central" (DESIGN §8: never "the f worst" when everyone is honest).
An exclusion is evidence only when the update also stands out from the round: its
rule score (higher is more suspicious for every rule) lies beyond Tukey's far-out
fence Q3 + 3·IQR of the round's scores. An update rejected without a score counts.
A verdict without a node id (a secure round's bucket) is evidence against nobody.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from fedmesh.services.coordinator.ports import Verdict

FENCE_IQRS = 3.0


def far_out_fence(scores: Sequence[float]) -> float:
    """Q3 + 3·IQR of the scores (infinite with fewer than four, where quartiles mean little)."""
    if len(scores) < 4:
        return float("inf")
    q1, _, q3 = statistics.quantiles(scores, n=4, method="inclusive")
    return q3 + FENCE_IQRS * (q3 - q1)


def suspected(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """The excluded updates of a node that are evidence: unscored, or beyond the far-out fence.

    Verdicts without a node id (secure rounds judge buckets, not nodes) are never evidence.
    """
    fence = far_out_fence([v.score for v in verdicts if v.score is not None])
    return [
        v for v in verdicts if v.node_id and v.excluded and (v.score is None or v.score > fence)
    ]
