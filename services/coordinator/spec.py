"""What an operator asks of a run, validated before the run starts."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from fedmesh.aggregation.spec import Rule, RuleSpec, min_participants
from fedmesh.errors import InvalidArgument

# DESIGN §8: deadlines 60 s collect / 30 s aggregate; 3 min, 10 target participants.
DEFAULT_COLLECT_DEADLINE_S = 60.0
DEFAULT_AGGREGATE_DEADLINE_S = 30.0
MAX_PARTICIPANTS = 50


@dataclass(frozen=True)
class AggregationSettings:
    """The rule, the Byzantine count it must tolerate, and its parameters."""

    rule: str = "fedavg"
    byzantine_f: int = 0
    bucket_size: int = 0
    multi_krum_m: int = 0
    clip_radius: float = 0.0
    norm_bound: float = 0.0


@dataclass(frozen=True)
class TrainingSettings:
    """Local training on each node."""

    local_epochs: int = 1
    learning_rate: float = 1e-3


@dataclass(frozen=True)
class PrivacySettings:
    """Differential privacy (DESIGN §8 defaults)."""

    enabled: bool = False
    clip_norm: float = 1.0
    noise_multiplier: float = 1.1
    delta: float = 1e-5
    epsilon_budget: float = 1.0
    sampling_rate: float = 0.0


@dataclass(frozen=True)
class SecureAggregationSettings:
    """SecAgg+ settings; 0 means the default (see `SecureRoundSpec`).

    `threshold` t of the `neighbours` k each node masks with; `bucket_size`
    nodes per secure bucket (0: one bucket of all participants); `min_survivors`
    the fewest inputs a bucket may reveal the sum of; `clip_range` the
    fixed-point range per coordinate.
    """

    enabled: bool = False
    threshold: int = 0
    neighbours: int = 0
    bucket_size: int = 0
    min_survivors: int = 0
    clip_range: float = 0.0


@dataclass(frozen=True)
class RunSpec:
    """A run: model, rule, rounds, participants, deadlines, privacy."""

    model_name: str
    rounds: int
    aggregation: AggregationSettings = field(default_factory=AggregationSettings)
    min_participants: int = 3
    target_participants: int = 10
    over_selection: float = 0.3
    collect_deadline_s: float = DEFAULT_COLLECT_DEADLINE_S
    aggregate_deadline_s: float = DEFAULT_AGGREGATE_DEADLINE_S
    seed: int = 0
    training: TrainingSettings = field(default_factory=TrainingSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    secure_aggregation: SecureAggregationSettings = field(default_factory=SecureAggregationSettings)

    def to_json(self) -> str:
        """JSON form stored in Redis."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> RunSpec:
        """Parse the stored JSON form."""
        data: dict[str, Any] = json.loads(raw)
        return cls(
            **{
                **data,
                "aggregation": AggregationSettings(**data["aggregation"]),
                "training": TrainingSettings(**data["training"]),
                "privacy": PrivacySettings(**data["privacy"]),
                "secure_aggregation": SecureAggregationSettings(**data["secure_aggregation"]),
            }
        )

    def selection_size(self, eligible: int) -> int:
        """How many nodes to pick: the target plus over-selection, capped by who is eligible."""
        wanted = math.ceil(self.target_participants * (1.0 + self.over_selection))
        return min(eligible, wanted, MAX_PARTICIPANTS)


def validate(spec: RunSpec) -> RunSpec:
    """Check a spec up front; InvalidArgument says what is wrong and what is expected."""
    problems: list[str] = []
    if not spec.model_name:
        problems.append("model_name is empty")
    if spec.rounds < 1:
        problems.append(f"rounds is {spec.rounds}; expected at least 1")
    rule = spec.aggregation.rule
    known = [r.value for r in Rule]
    if not rule:
        problems.append(f"aggregation rule is not set; expected one of {', '.join(known)}")
    elif rule not in known:
        problems.append(f"unknown aggregation rule {rule!r}; expected one of {', '.join(known)}")
    f = spec.aggregation.byzantine_f
    if f < 0:
        problems.append(f"byzantine_f is {f}; expected 0 or more")
    if not math.isfinite(spec.collect_deadline_s) or spec.collect_deadline_s <= 0:
        problems.append(
            f"collect deadline is {spec.collect_deadline_s} s; expected a positive number"
        )
    if not math.isfinite(spec.aggregate_deadline_s) or spec.aggregate_deadline_s <= 0:
        problems.append(
            f"aggregate deadline is {spec.aggregate_deadline_s} s; expected a positive number"
        )
    if spec.min_participants < 1:
        problems.append(f"min_participants is {spec.min_participants}; expected at least 1")
    if spec.target_participants < spec.min_participants:
        problems.append(
            f"target_participants {spec.target_participants} is below "
            f"min_participants {spec.min_participants}"
        )
    if spec.target_participants > MAX_PARTICIPANTS:
        problems.append(
            f"target_participants {spec.target_participants} exceeds {MAX_PARTICIPANTS}"
        )
    if spec.over_selection < 0:
        problems.append(f"over_selection is {spec.over_selection}; expected 0 or more")
    if spec.training.local_epochs < 1 or spec.training.learning_rate <= 0:
        problems.append("training needs local_epochs ≥ 1 and a positive learning_rate")
    if not problems:
        needed = min_participants(rule_spec(spec.aggregation))
        if spec.min_participants < needed:
            problems.append(
                f"quorum infeasible: {rule} with f={f} needs at least {needed} updates, "
                f"but min_participants is {spec.min_participants}"
            )
    problems.extend(_privacy_problems(spec.privacy))
    problems.extend(_secure_problems(spec))
    if problems:
        raise InvalidArgument("invalid run spec: " + "; ".join(problems))
    return spec


def with_defaults(spec: RunSpec) -> RunSpec:
    """Fill zero-valued deadlines with DESIGN §8 defaults (proto3 sends 0 for unset)."""
    return replace(
        spec,
        collect_deadline_s=spec.collect_deadline_s or DEFAULT_COLLECT_DEADLINE_S,
        aggregate_deadline_s=spec.aggregate_deadline_s or DEFAULT_AGGREGATE_DEADLINE_S,
    )


def rule_spec(settings: AggregationSettings) -> RuleSpec:
    """The aggregation engine's spec for a run's settings (0 means the rule's default)."""
    return RuleSpec(
        rule=Rule(settings.rule),
        f=settings.byzantine_f,
        bucket_size=settings.bucket_size,
        multi_krum_m=settings.multi_krum_m or None,
        tau=settings.clip_radius or 1.0,
        norm_bound=settings.norm_bound or 1.0,
    )


def _secure_problems(spec: RunSpec) -> list[str]:
    secure = spec.secure_aggregation
    if not secure.enabled:
        return []
    problems = []
    for name in ("threshold", "neighbours", "bucket_size", "min_survivors"):
        value = getattr(secure, name)
        if value < 0:
            problems.append(
                f"secure_aggregation.{name} is {value}; expected 0 (the default) or more"
            )
    t, k = secure.threshold, secure.neighbours
    if t > 0 and k > 0:
        if t > k:
            problems.append(
                f"secure_aggregation.threshold {t} exceeds neighbours {k}; expected at most {k}"
            )
        elif t <= k // 2:
            problems.append(
                f"secure_aggregation.threshold {t} is not a strict majority of {k} neighbours; "
                f"expected at least {k // 2 + 1}"
            )
    if not (math.isfinite(secure.clip_range) and secure.clip_range >= 0):
        problems.append(
            f"secure_aggregation.clip_range is {secure.clip_range}; "
            "expected a positive number (0: the default 1.0)"
        )
    if secure.bucket_size == 1:
        problems.append(
            "secure_aggregation.bucket_size is 1, which would reveal every node's update; "
            "expected 0 (one bucket of all participants) or at least 2"
        )
    if secure.bucket_size > 1 and secure.min_survivors > secure.bucket_size:
        problems.append(
            f"secure_aggregation.min_survivors {secure.min_survivors} exceeds bucket_size "
            f"{secure.bucket_size}; expected at most {secure.bucket_size}, since no bucket "
            "can have more survivors than members"
        )
    if spec.aggregation.bucket_size != 0:
        problems.append(
            f"aggregation.bucket_size is {spec.aggregation.bucket_size} with secure aggregation; "
            "masked updates cannot be bucketed by the rule, use secure_aggregation.bucket_size "
            "instead and leave aggregation.bucket_size 0"
        )
    return problems


def _privacy_problems(privacy: PrivacySettings) -> list[str]:
    if not privacy.enabled:
        return []
    problems = []
    for name in ("clip_norm", "noise_multiplier", "epsilon_budget"):
        value = getattr(privacy, name)
        if not (math.isfinite(value) and value > 0):
            problems.append(f"privacy.{name} is {value}; expected a positive number")
    if not 0 < privacy.delta < 1:
        problems.append(f"privacy.delta is {privacy.delta}; expected a value in (0, 1)")
    if not 0 <= privacy.sampling_rate <= 1:
        problems.append(
            f"privacy.sampling_rate is {privacy.sampling_rate}; expected a value in [0, 1] "
            "(0: every round counted at rate 1)"
        )
    return problems
