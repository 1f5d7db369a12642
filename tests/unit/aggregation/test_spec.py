import re

import pytest

from fedmesh.aggregation import InsufficientUpdatesError, Rule, RuleSpec, min_participants
from fedmesh.aggregation.spec import check_participants
from fedmesh.errors import FailedPrecondition


@pytest.mark.parametrize(
    ("rule", "f", "expected"),
    [
        (Rule.FEDAVG, 5, 1),
        (Rule.NORM_BOUNDING, 5, 1),
        (Rule.KRUM, 1, 5),
        (Rule.MULTI_KRUM, 5, 13),
        (Rule.BULYAN, 5, 23),
        (Rule.MEDIAN, 5, 11),
        (Rule.TRIMMED_MEAN, 2, 5),
        (Rule.GEOMETRIC_MEDIAN, 3, 7),
        (Rule.CENTERED_CLIPPING, 0, 1),
    ],
)
def test_min_participants_follows_each_papers_bound(rule: Rule, f: int, expected: int) -> None:
    assert min_participants(RuleSpec(rule, f=f)) == expected


def test_min_participants_counts_buckets_and_rule_parameters() -> None:
    assert min_participants(RuleSpec(Rule.KRUM, f=5, bucket_size=2)) == 25
    assert min_participants(RuleSpec(Rule.MULTI_KRUM, f=1, multi_krum_m=8)) == 9
    assert min_participants(RuleSpec(Rule.TRIMMED_MEAN, f=1, trim=3)) == 7


def test_the_original_systems_quorum_of_three_is_refused_for_krum() -> None:
    with pytest.raises(InsufficientUpdatesError) as error:
        check_participants(RuleSpec(Rule.KRUM, f=1), 3)

    assert str(error.value) == "krum needs n ≥ 2f+3 = 5 updates for f=1, got n=3"
    assert isinstance(error.value, FailedPrecondition)


def test_bucketing_error_names_the_bucket_requirement() -> None:
    with pytest.raises(InsufficientUpdatesError) as error:
        check_participants(RuleSpec(Rule.BULYAN, f=5, bucket_size=2), 25)

    assert str(error.value) == (
        "bulyan with bucket_size 2 needs n ≥ 45 updates (at least 23 buckets, 4f+3 for f=5), "
        "got n=25"
    )


def test_rule_accepts_its_name() -> None:
    assert RuleSpec("centered_clipping").rule is Rule.CENTERED_CLIPPING  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"f": -1}, "f must be ≥ 0, got -1"),
        ({"bucket_size": -2}, "bucket_size must be ≥ 0, got -2"),
        ({"multi_krum_m": 0}, "multi_krum_m must be ≥ 1, got 0"),
        ({"f": 3, "trim": 2}, "trim must be ≥ f=3 to tolerate f Byzantine values, got 2"),
        ({"tau": 0.0}, "tau must be a finite number > 0, got 0.0"),
        ({"clipping_iterations": 0}, "clipping_iterations must be ≥ 1, got 0"),
        ({"norm_bound": float("inf")}, "norm_bound must be a finite number > 0, got inf"),
        ({"smoothing": -1.0}, "smoothing must be a finite number > 0, got -1.0"),
        ({"weiszfeld_iterations": 0}, "weiszfeld_iterations must be ≥ 1, got 0"),
        ({"weiszfeld_tolerance": 0.0}, "weiszfeld_tolerance must be a finite number > 0, got 0.0"),
    ],
)
def test_bad_parameters_are_refused(changes: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        RuleSpec(Rule.KRUM, **changes)  # type: ignore[arg-type]

    assert str(error.value) == message


def test_unknown_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="'average' is not a valid Rule"):
        RuleSpec("average")  # type: ignore[arg-type]
