import pytest
import torch

from fedmesh.aggregation import (
    InsufficientUpdatesError,
    InvalidUpdatesError,
    Rule,
    RuleSpec,
    aggregate,
    min_participants,
)
from fedmesh.errors import InvalidArgument


def spec_for(rule: Rule) -> RuleSpec:
    return RuleSpec(rule, f=1)


def healthy_updates(n: int, m: int = 6) -> torch.Tensor:
    generator = torch.Generator().manual_seed(n)
    return torch.randn(n, m, generator=generator)


@pytest.mark.parametrize("rule", list(Rule))
def test_every_rule_returns_one_evidence_per_update(rule: Rule) -> None:
    spec = spec_for(rule)
    updates = healthy_updates(min_participants(spec) + 2)

    result = aggregate(spec, updates, [1.0] * updates.shape[0])

    assert result.rule == rule.value
    assert result.aggregate.dtype == torch.float32
    assert result.aggregate.shape == (updates.shape[1],)
    assert [e.index for e in result.evidence] == list(range(updates.shape[0]))
    assert all(e.reason for e in result.evidence)


@pytest.mark.parametrize("rule", [r for r in Rule if r not in (Rule.FEDAVG, Rule.NORM_BOUNDING)])
def test_every_robust_rule_refuses_one_update_too_few(rule: Rule) -> None:
    spec = spec_for(rule)
    n = min_participants(spec) - 1

    with pytest.raises(InsufficientUpdatesError) as error:
        aggregate(spec, healthy_updates(n))

    message = str(error.value)
    assert message.startswith(f"{rule.value} needs n ≥ ")
    assert message.endswith(f"= {n + 1} updates for f=1, got n={n}")


@pytest.mark.parametrize("rule", list(Rule))
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_every_rule_refuses_non_finite_values(rule: Rule, bad: float) -> None:
    spec = spec_for(rule)
    updates = healthy_updates(min_participants(spec) + 2)
    # Every update carries the bad value so no robust rule can trim it away.
    updates[:, 2] = bad

    with pytest.raises(InvalidUpdatesError, match="is not finite: the updates contain NaN or Inf"):
        aggregate(spec, updates)


def test_nan_in_a_single_update_reaches_a_coordinate_wise_rule() -> None:
    updates = healthy_updates(5)
    updates[4, 0] = float("nan")

    with pytest.raises(InvalidUpdatesError, match="median aggregate is not finite"):
        aggregate(RuleSpec(Rule.MEDIAN, f=1), updates)


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        (torch.zeros(4), r"2-D n×m tensor \(one row per update\), got shape \(4,\)"),
        (torch.zeros(0, 3), r"at least one update of at least one coordinate, got shape \(0, 3\)"),
        (torch.zeros(3, 2, dtype=torch.int64), "must be floating point, got torch.int64"),
    ],
)
def test_malformed_updates_are_refused(updates: torch.Tensor, message: str) -> None:
    with pytest.raises(InvalidUpdatesError, match=message) as error:
        aggregate(RuleSpec(Rule.FEDAVG), updates)

    assert isinstance(error.value, InvalidArgument)


def test_float64_updates_are_aggregated_in_float32() -> None:
    updates = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)

    result = aggregate(RuleSpec(Rule.FEDAVG), updates)

    assert result.aggregate.dtype == torch.float32
    assert result.aggregate.tolist() == [2.0, 3.0]


def test_robust_rules_ignore_claimed_sample_counts() -> None:
    updates = torch.tensor([[0.0], [1.0], [2.0], [3.0], [1000.0]])
    weights = [1.0, 1.0, 1.0, 1.0, 1e9]

    assert aggregate(RuleSpec(Rule.MEDIAN, f=1), updates, weights).aggregate.tolist() == [2.0]
    assert aggregate(RuleSpec(Rule.FEDAVG), updates, weights).aggregate.item() > 999.0
