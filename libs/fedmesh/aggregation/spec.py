"""Which rule to run and with which parameters, and how many updates it needs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from fedmesh.aggregation.errors import InsufficientUpdatesError


class Rule(StrEnum):
    """The aggregation rules a run can choose."""

    FEDAVG = "fedavg"
    KRUM = "krum"
    MULTI_KRUM = "multi_krum"
    MEDIAN = "median"
    TRIMMED_MEAN = "trimmed_mean"
    BULYAN = "bulyan"
    GEOMETRIC_MEDIAN = "geometric_median"
    CENTERED_CLIPPING = "centered_clipping"
    NORM_BOUNDING = "norm_bounding"


@dataclass(frozen=True)
class RuleSpec:
    """A rule and its parameters, as a run configures them.

    `f` is the number of Byzantine updates the rule must tolerate. `bucket_size`
    0 turns bucketing off; s ≥ 1 averages random buckets of s updates first.
    `multi_krum_m` and `trim` default to n − f and f. `tau` and
    `clipping_iterations` are centered clipping's radius and number of steps;
    `norm_bound` is norm bounding's L2 bound; `smoothing`, `weiszfeld_iterations`
    and `weiszfeld_tolerance` drive the smoothed Weiszfeld algorithm; `seed`
    makes the bucket assignment reproducible.
    """

    rule: Rule
    f: int = 0
    bucket_size: int = 0
    multi_krum_m: int | None = None
    trim: int | None = None
    tau: float = 1.0
    clipping_iterations: int = 3
    norm_bound: float = 1.0
    smoothing: float = 1e-6
    weiszfeld_iterations: int = 1000
    weiszfeld_tolerance: float = 1e-6
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "rule", Rule(self.rule))
        _require(self.f >= 0, f"f must be ≥ 0, got {self.f}")
        _require(self.bucket_size >= 0, f"bucket_size must be ≥ 0, got {self.bucket_size}")
        _require(
            self.multi_krum_m is None or self.multi_krum_m >= 1,
            f"multi_krum_m must be ≥ 1, got {self.multi_krum_m}",
        )
        _require(
            self.trim is None or self.trim >= self.f,
            f"trim must be ≥ f={self.f} to tolerate f Byzantine values, got {self.trim}",
        )
        _require(_positive(self.tau), f"tau must be a finite number > 0, got {self.tau}")
        _require(
            self.clipping_iterations >= 1,
            f"clipping_iterations must be ≥ 1, got {self.clipping_iterations}",
        )
        _require(
            _positive(self.norm_bound),
            f"norm_bound must be a finite number > 0, got {self.norm_bound}",
        )
        _require(
            _positive(self.smoothing),
            f"smoothing must be a finite number > 0, got {self.smoothing}",
        )
        _require(
            self.weiszfeld_iterations >= 1,
            f"weiszfeld_iterations must be ≥ 1, got {self.weiszfeld_iterations}",
        )
        _require(
            _positive(self.weiszfeld_tolerance),
            f"weiszfeld_tolerance must be a finite number > 0, got {self.weiszfeld_tolerance}",
        )

    @property
    def trim_count(self) -> int:
        """Values removed from each end of every coordinate by the trimmed mean."""
        return self.f if self.trim is None else self.trim


def rule_requirement(rule: Rule, f: int) -> tuple[int, str]:
    """The fewest inputs `rule` accepts with f Byzantine ones, and that bound as a formula."""
    if rule in (Rule.KRUM, Rule.MULTI_KRUM):
        return 2 * f + 3, "2f+3"
    if rule is Rule.BULYAN:
        return 4 * f + 3, "4f+3"
    if rule in (Rule.FEDAVG, Rule.NORM_BOUNDING):
        return 1, "1"
    return 2 * f + 1, "2f+1"


def min_participants(spec: RuleSpec) -> int:
    """The fewest updates with which `spec` can run (bucketing included).

    With bucketing, f Byzantine updates can spoil at most f buckets, so the rule
    needs its own minimum of buckets: ⌈n/s⌉ ≥ need, that is n ≥ s·(need−1)+1.
    """
    need = _inputs_needed(spec)
    if spec.bucket_size <= 1:
        return need
    return spec.bucket_size * (need - 1) + 1


def check_participants(spec: RuleSpec, n: int) -> None:
    """Raise `InsufficientUpdatesError` when n updates are too few for `spec`."""
    need = min_participants(spec)
    if n >= need:
        return
    bound, formula = rule_requirement(spec.rule, spec.f)
    if spec.rule is Rule.MULTI_KRUM and spec.multi_krum_m is not None:
        formula = f"max({formula}, m+f) with m={spec.multi_krum_m}"
        bound = _inputs_needed(spec)
    if spec.rule is Rule.TRIMMED_MEAN and spec.trim is not None:
        formula = f"2·trim+1 with trim={spec.trim}"
        bound = _inputs_needed(spec)
    if spec.bucket_size > 1:
        raise InsufficientUpdatesError(
            f"{spec.rule} with bucket_size {spec.bucket_size} needs n ≥ {need} updates "
            f"(at least {bound} buckets, {formula} for f={spec.f}), got n={n}"
        )
    raise InsufficientUpdatesError(
        f"{spec.rule} needs n ≥ {formula} = {bound} updates for f={spec.f}, got n={n}"
    )


def bucket_count(n: int, bucket_size: int) -> int:
    """How many buckets n updates fill with buckets of `bucket_size` (0: no bucketing)."""
    return n if bucket_size <= 1 else math.ceil(n / bucket_size)


def _inputs_needed(spec: RuleSpec) -> int:
    need, _ = rule_requirement(spec.rule, spec.f)
    if spec.rule is Rule.MULTI_KRUM and spec.multi_krum_m is not None:
        need = max(need, spec.multi_krum_m + spec.f)
    if spec.rule is Rule.TRIMMED_MEAN:
        need = max(need, 2 * spec.trim_count + 1)
    return need


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
