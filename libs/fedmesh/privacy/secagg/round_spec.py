"""The contract of a secure round between the coordinator and the aggregator.

The coordinator writes a `SecureRoundSpec` into the round's record (field
`ROUND_FIELD`) when it opens a round of a run with secure aggregation; the
aggregator reads it when the first node joins and derives the round's
`SecureRoundPlan`: participant indices, buckets, one SecAgg+ config per bucket
and the fixed-point codec. Everything in the plan is public.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from fedmesh.privacy.noise import distributed_noise_stddev
from fedmesh.privacy.secagg.bucketing import BucketPlan, plan_buckets
from fedmesh.privacy.secagg.config import SecAggConfig
from fedmesh.privacy.secagg.quantize import FixedPointCodec

ROUND_FIELD = "secure_aggregation"
"""The round-record field that holds the JSON form of a `SecureRoundSpec`."""

ABORT_FIELD = "secure_abort_reason"
"""The round-record field where the aggregator writes why a secure round aborted."""

DEFAULT_CLIP_RANGE = 1.0
_SEED_PURPOSE = b"fedmesh/secagg/v1/round-seed"


@dataclass(frozen=True)
class SecureRoundSpec:
    """A run's secure-aggregation settings as one round uses them (0 means the default).

    `noise_stddev` is σ = z·C of the Gaussian mechanism that each bucket's sum
    must carry when the run has differential privacy, else 0; the nodes add it
    in shares. `stage_timeout_s` is how long a stage waits for stragglers after
    its first message.
    """

    threshold: int = 0
    neighbours: int = 0
    bucket_size: int = 0
    min_survivors: int = 0
    clip_range: float = DEFAULT_CLIP_RANGE
    noise_stddev: float = 0.0
    stage_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("threshold", "neighbours", "bucket_size", "min_survivors"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} is {getattr(self, name)}; expected 0 or more")
        if not (math.isfinite(self.clip_range) and self.clip_range > 0):
            raise ValueError(f"clip_range is {self.clip_range}; expected a positive number")
        if not (math.isfinite(self.noise_stddev) and self.noise_stddev >= 0):
            raise ValueError(f"noise_stddev is {self.noise_stddev}; expected 0 or more")
        if not (math.isfinite(self.stage_timeout_s) and self.stage_timeout_s > 0):
            raise ValueError(f"stage_timeout_s is {self.stage_timeout_s}; expected > 0")

    def to_json(self) -> str:
        """The form stored in the round record."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> SecureRoundSpec:
        """Parse the stored form; ValueError names what is wrong."""
        try:
            data = json.loads(raw)
            return cls(**data)
        except (TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"not a secure round spec: {error}") from error


@dataclass(frozen=True)
class SecureRoundPlan:
    """Who is which index, which bucket, and each bucket's SecAgg+ config and codec."""

    participants: tuple[str, ...]
    buckets: BucketPlan
    configs: tuple[SecAggConfig, ...]
    codec: FixedPointCodec
    spec: SecureRoundSpec

    def index_of(self, node_id: str) -> int:
        """The node's participant index; KeyError when it is not a participant."""
        try:
            return self.participants.index(node_id)
        except ValueError:
            raise KeyError(f"node {node_id!r} is not a participant of this secure round") from None

    def bucket_of(self, index: int) -> int:
        """The bucket that holds participant `index`."""
        for bucket, members in enumerate(self.buckets.buckets):
            if index in members:
                return bucket
        raise KeyError(f"participant index {index} is in no bucket")

    def noise_share_stddev(self, bucket: int) -> float:
        """σ/√n_min: the share each member adds so that n_min survivors carry σ in total."""
        return distributed_noise_stddev(self.spec.noise_stddev, self.configs[bucket].min_survivors)


def round_context(run_id: str, round_no: int) -> bytes:
    """The bytes that separate this round's keys and masks from every other round's."""
    return f"fedmesh/secagg/v1/run/{run_id}/round/{round_no}".encode()


def plan_round(
    spec: SecureRoundSpec,
    participants: Sequence[str],
    vector_length: int,
    run_id: str,
    round_no: int,
    opened_unix_ms: int,
) -> SecureRoundPlan:
    """Derive the round's public plan; ValueError when the settings cannot work for these nodes.

    Participants are indexed in sorted order. The graph and bucket seed comes
    from the run, the round and the time it opened: public, but fixed only once
    the round exists.
    """
    ordered = tuple(sorted(participants))
    if len(ordered) < 2:
        raise ValueError(f"a secure round needs at least 2 participants, got {len(ordered)}")
    context = round_context(run_id, round_no)
    seed = hashlib.sha256(_SEED_PURPOSE + context + str(opened_unix_ms).encode()).digest()
    indices = list(range(len(ordered)))
    bucket_size = spec.bucket_size or len(ordered)
    buckets = plan_buckets(indices, bucket_size, seed)
    configs = buckets.configs(
        vector_length=vector_length,
        graph_seed=seed,
        round_context=context,
        degree=spec.neighbours or None,
        threshold=spec.threshold or None,
        min_survivors=spec.min_survivors or None,
    )
    return SecureRoundPlan(
        participants=ordered,
        buckets=buckets,
        configs=configs,
        codec=buckets.codec(spec.clip_range),
        spec=spec,
    )
