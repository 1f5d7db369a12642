import math

import pytest

from fedmesh.errors import InvalidArgument
from fedmesh.services.coordinator.spec import (
    AggregationSettings,
    RunSpec,
    TrainingSettings,
    validate,
    with_defaults,
)


def spec(**overrides: object) -> RunSpec:
    base = RunSpec(model_name="m", rounds=3, min_participants=3, target_participants=5)
    return RunSpec(**{**base.__dict__, **overrides})


def test_valid_spec_passes_unchanged() -> None:
    good = spec()
    assert validate(good) is good


def test_krum_quorum_must_hold_2f_plus_3() -> None:
    krum = spec(aggregation=AggregationSettings(rule="krum", byzantine_f=1), min_participants=4)
    with pytest.raises(
        InvalidArgument, match="krum with f=1 needs at least 5 updates, but min_participants is 4"
    ):
        validate(krum)
    assert validate(spec(aggregation=krum.aggregation, min_participants=5, target_participants=5))


def test_bulyan_quorum_must_hold_4f_plus_3() -> None:
    bulyan = spec(
        aggregation=AggregationSettings(rule="bulyan", byzantine_f=2),
        min_participants=10,
        target_participants=12,
    )
    with pytest.raises(InvalidArgument, match="bulyan with f=2 needs at least 11 updates"):
        validate(bulyan)


def test_unknown_rule_is_named_with_the_choices() -> None:
    with pytest.raises(
        InvalidArgument, match="unknown aggregation rule 'avg'; expected one of fedavg, krum"
    ):
        validate(spec(aggregation=AggregationSettings(rule="avg")))


@pytest.mark.parametrize("deadline", [-1.0, 0.0, math.inf, math.nan])
def test_deadline_must_be_positive_and_finite(deadline: float) -> None:
    with pytest.raises(
        InvalidArgument, match=r"collect deadline is .* s; expected a positive number"
    ):
        validate(spec(collect_deadline_s=deadline))


def test_every_problem_is_reported_at_once() -> None:
    bad = spec(model_name="", rounds=0, target_participants=2, training=TrainingSettings(0, 0.0))
    with pytest.raises(InvalidArgument) as info:
        validate(bad)
    message = str(info.value)
    assert "model_name is empty" in message
    assert "rounds is 0; expected at least 1" in message
    assert "target_participants 2 is below min_participants 3" in message
    assert "local_epochs" in message


def test_zero_deadlines_take_the_design_defaults() -> None:
    filled = with_defaults(spec(collect_deadline_s=0.0, aggregate_deadline_s=0.0))
    assert (filled.collect_deadline_s, filled.aggregate_deadline_s) == (60.0, 30.0)


def test_selection_size_adds_over_selection_and_caps_at_eligible() -> None:
    over = spec(target_participants=10, over_selection=0.3)
    assert over.selection_size(eligible=100) == 13
    assert over.selection_size(eligible=11) == 11


def test_json_round_trip_is_exact() -> None:
    original = spec(aggregation=AggregationSettings(rule="trimmed_mean", byzantine_f=1), seed=42)
    assert RunSpec.from_json(original.to_json()) == original
