"""What a rule returns: the aggregate and the evidence about every update."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class UpdateEvidence:
    """What the rule did with one update.

    `score` is rule-specific (see docs/aggregation.md): the Krum score, the
    share of coordinates at which the value was trimmed, a distance or a norm;
    None where the rule scores nothing. `excluded` is true only when the rule
    dropped the update because of its values, under every tie-breaking, so it
    had no part in the aggregate; `clipped` when it entered scaled down.
    `bucket` is the bucket the update was averaged into, if bucketing ran.
    """

    index: int
    score: float | None
    excluded: bool
    clipped: bool
    reason: str
    bucket: int | None = None


@dataclass(frozen=True)
class AggregationResult:
    """The aggregate (1-D float32) with one `UpdateEvidence` per input update, in order.

    With bucketing, `buckets` lists the update indices of each bucket and
    `bucket_evidence` what the rule did with each bucket mean; an update's
    evidence then repeats its bucket's (a whole bucket is kept or dropped).
    """

    aggregate: torch.Tensor
    evidence: list[UpdateEvidence]
    rule: str
    buckets: tuple[tuple[int, ...], ...] = ()
    bucket_evidence: list[UpdateEvidence] = field(default_factory=list)

    @property
    def excluded(self) -> tuple[int, ...]:
        """Indices of the updates the rule excluded (see `UpdateEvidence.excluded`)."""
        return tuple(e.index for e in self.evidence if e.excluded)

    @property
    def clipped(self) -> tuple[int, ...]:
        """Indices of the updates that entered the aggregate scaled down."""
        return tuple(e.index for e in self.evidence if e.clipped)
