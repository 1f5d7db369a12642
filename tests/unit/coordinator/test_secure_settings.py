"""Secure aggregation settings: validation, feasibility for the run, and the wire form."""

import dataclasses
import json
import math
from typing import Any

import pytest

from fedmesh.errors import FailedPrecondition, InvalidArgument
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.services.coordinator import convert
from fedmesh.services.coordinator.control import check_feasible_privacy
from fedmesh.services.coordinator.runs import ModelRef
from fedmesh.services.coordinator.spec import (
    AggregationSettings,
    PrivacySettings,
    RunSpec,
    SecureAggregationSettings,
    TrainingSettings,
    validate,
)
from fedmesh.services.coordinator.tasks import Task, TaskKind

PREFIX = "invalid run spec: "


def secure_spec(
    rule: str = "fedavg",
    f: int = 0,
    min_participants: int = 4,
    target_participants: int = 8,
    **secure: Any,
) -> RunSpec:
    return RunSpec(
        model_name="m",
        rounds=2,
        aggregation=AggregationSettings(rule=rule, byzantine_f=f),
        min_participants=min_participants,
        target_participants=target_participants,
        secure_aggregation=SecureAggregationSettings(enabled=True, **secure),
    )


def invalid(spec: RunSpec) -> str:
    with pytest.raises(InvalidArgument) as info:
        validate(spec)
    message = str(info.value)
    assert message.startswith(PREFIX)
    return message.removeprefix(PREFIX)


def infeasible(spec: RunSpec) -> str:
    validate(spec)
    with pytest.raises(FailedPrecondition) as info:
        check_feasible_privacy(spec)
    return str(info.value)


def test_full_settings_are_valid_and_feasible() -> None:
    spec = secure_spec(threshold=3, neighbours=4, bucket_size=4, min_survivors=3, clip_range=2.5)

    assert validate(spec) is spec
    check_feasible_privacy(spec)


@pytest.mark.parametrize("name", ["threshold", "neighbours", "bucket_size", "min_survivors"])
def test_negative_counts_are_invalid(name: str) -> None:
    spec = secure_spec()
    negative: dict[str, Any] = {name: -1}
    settings = dataclasses.replace(spec.secure_aggregation, **negative)

    assert invalid(dataclasses.replace(spec, secure_aggregation=settings)) == (
        f"secure_aggregation.{name} is -1; expected 0 (the default) or more"
    )


def test_threshold_above_the_neighbours_is_invalid() -> None:
    assert invalid(secure_spec(threshold=5, neighbours=4)) == (
        "secure_aggregation.threshold 5 exceeds neighbours 4; expected at most 4"
    )


@pytest.mark.parametrize(("threshold", "neighbours"), [(2, 4), (1, 2), (2, 5)])
def test_threshold_must_be_a_strict_majority(threshold: int, neighbours: int) -> None:
    assert invalid(secure_spec(threshold=threshold, neighbours=neighbours)) == (
        f"secure_aggregation.threshold {threshold} is not a strict majority of {neighbours} "
        f"neighbours; expected at least {neighbours // 2 + 1}"
    )


@pytest.mark.parametrize(("threshold", "neighbours"), [(3, 4), (3, 5), (1, 1), (3, 0), (0, 4)])
def test_strict_majorities_and_defaults_are_valid(threshold: int, neighbours: int) -> None:
    spec = secure_spec(threshold=threshold, neighbours=neighbours)

    assert validate(spec) is spec


@pytest.mark.parametrize("clip_range", [-1.0, math.inf, math.nan, -math.inf])
def test_clip_range_must_be_positive_and_finite(clip_range: float) -> None:
    assert invalid(secure_spec(clip_range=clip_range)) == (
        f"secure_aggregation.clip_range is {clip_range}; "
        "expected a positive number (0: the default 1.0)"
    )


def test_a_bucket_of_one_is_invalid() -> None:
    assert invalid(secure_spec(bucket_size=1)) == (
        "secure_aggregation.bucket_size is 1, which would reveal every node's update; "
        "expected 0 (one bucket of all participants) or at least 2"
    )


def test_more_survivors_than_a_bucket_holds_is_invalid() -> None:
    assert invalid(secure_spec(bucket_size=3, min_survivors=4)) == (
        "secure_aggregation.min_survivors 4 exceeds bucket_size 3; expected at most 3, "
        "since no bucket can have more survivors than members"
    )


def test_the_rules_own_bucketing_is_invalid_with_secure_aggregation() -> None:
    spec = secure_spec()
    spec = RunSpec(
        **{**spec.__dict__, "aggregation": AggregationSettings(rule="median", bucket_size=2)}
    )

    assert invalid(spec) == (
        "aggregation.bucket_size is 2 with secure aggregation; masked updates cannot be "
        "bucketed by the rule, use secure_aggregation.bucket_size instead and leave "
        "aggregation.bucket_size 0"
    )


def test_settings_of_a_run_without_secure_aggregation_are_not_checked() -> None:
    spec = RunSpec(
        model_name="m",
        rounds=1,
        secure_aggregation=SecureAggregationSettings(enabled=False, threshold=-1),
    )

    assert validate(spec) is spec


def test_every_secure_problem_is_named_at_once() -> None:
    message = invalid(secure_spec(threshold=-2, bucket_size=1, clip_range=-0.5))

    assert message.count("; ") >= 2
    assert "secure_aggregation.threshold is -2" in message
    assert "secure_aggregation.bucket_size is 1" in message
    assert "secure_aggregation.clip_range is -0.5" in message


def test_a_bucket_larger_than_the_quorum_is_infeasible() -> None:
    assert infeasible(secure_spec(bucket_size=5, min_participants=4)) == (
        "secure_aggregation.bucket_size 5 exceeds min_participants 4: a round that closes "
        "with 4 updates cannot fill one bucket; expected a bucket_size of at most 4"
    )


def test_more_survivors_than_the_quorum_in_one_bucket_is_infeasible() -> None:
    assert infeasible(secure_spec(min_survivors=5, min_participants=4)) == (
        "secure_aggregation.min_survivors 5 exceeds min_participants 4: a round that closes "
        "with 4 updates could never be unmasked; expected at most 4"
    )


def test_a_secure_sum_of_one_update_is_infeasible() -> None:
    assert infeasible(secure_spec(min_participants=1, target_participants=1)) == (
        "secure aggregation with min_participants 1: the secure sum of one update is that "
        "update; expected min_participants of at least 2"
    )


def test_a_robust_rule_needs_its_quorum_of_buckets() -> None:
    # Krum with f=1 needs 2f+3 = 5 inputs: 6 nodes in buckets of 2 give only 3 bucket means.
    spec = secure_spec(rule="krum", f=1, bucket_size=2, min_participants=6, target_participants=10)

    assert infeasible(spec) == (
        "quorum infeasible with secure aggregation: krum with f=1 needs at least 5 bucket "
        "means, but min_participants 6 in secure buckets of 2 gives 3; expected "
        "min_participants of at least 10"
    )


def test_a_smaller_bucket_is_suggested_when_one_would_do() -> None:
    # Median with f=1 needs 2f+1 = 3 inputs: 9 nodes in buckets of 4 give 2, buckets of 3 give 3.
    spec = secure_spec(
        rule="median", f=1, bucket_size=4, min_participants=9, target_participants=12
    )

    assert infeasible(spec) == (
        "quorum infeasible with secure aggregation: median with f=1 needs at least 3 bucket "
        "means, but min_participants 9 in secure buckets of 4 gives 2; expected a "
        "secure_aggregation.bucket_size of at most 3 or min_participants of at least 12"
    )


def test_a_robust_rule_over_one_secure_bucket_is_infeasible() -> None:
    spec = secure_spec(rule="krum", f=0, min_participants=4)

    assert infeasible(spec) == (
        "quorum infeasible with secure aggregation: krum with f=0 needs at least 3 bucket "
        "means, but min_participants 4 in one secure bucket (bucket_size 0) gives 1; "
        "expected a secure_aggregation.bucket_size s ≥ 2 and min_participants ≥ s·3 "
        "(e.g. 2 and 6)"
    )


def test_a_robust_rule_with_enough_buckets_is_feasible() -> None:
    spec = secure_spec(rule="krum", f=1, bucket_size=2, min_participants=10, target_participants=12)

    check_feasible_privacy(validate(spec))


SETTINGS = SecureAggregationSettings(
    enabled=True, threshold=3, neighbours=4, bucket_size=5, min_survivors=4, clip_range=2.5
)


def test_run_spec_wire_form_round_trips_every_secure_setting() -> None:
    spec = RunSpec(model_name="m", rounds=2, secure_aggregation=SETTINGS)

    wire = convert.spec_to_proto(spec)
    back = convert.spec_from_proto(wire)

    assert wire.secure_aggregation == common.SecureAggregationSpec(
        enabled=True, threshold=3, neighbours=4, bucket_size=5, min_survivors=4, clip_range=2.5
    )
    assert back.secure_aggregation == SETTINGS


def test_unset_wire_settings_are_zero_that_is_the_defaults() -> None:
    wire = convert.spec_to_proto(RunSpec(model_name="m", rounds=1))
    wire.secure_aggregation.CopyFrom(common.SecureAggregationSpec(enabled=True))

    assert convert.spec_from_proto(wire).secure_aggregation == SecureAggregationSettings(
        enabled=True
    )


def test_a_tasks_wire_form_carries_every_secure_setting() -> None:
    task = Task(
        task_id="run-1/1/train/n1",
        kind=TaskKind.TRAIN,
        run_id="run-1",
        round_no=1,
        model=ModelRef("m", 1, "d"),
        aggregator_address="127.0.0.1:1",
        deadline_unix_ms=5,
        training=TrainingSettings(),
        privacy=PrivacySettings(),
        secure_aggregation=SETTINGS,
    )

    wire = convert.task_to_proto(task)

    assert convert.secagg_from_proto(wire.secure_aggregation) == SETTINGS
    assert Task.from_json(task.to_json()).secure_aggregation == SETTINGS


def test_a_spec_stored_before_the_new_settings_still_loads() -> None:
    data = json.loads(RunSpec(model_name="m", rounds=1).to_json())
    data["secure_aggregation"] = {"enabled": True, "threshold": 3, "neighbours": 4}

    loaded = RunSpec.from_json(json.dumps(data)).secure_aggregation

    assert loaded == SecureAggregationSettings(enabled=True, threshold=3, neighbours=4)
