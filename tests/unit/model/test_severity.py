import pytest

from fedmesh.model import DEFAULT_THRESHOLD, severity


def test_default_threshold_is_the_designed_one() -> None:
    assert DEFAULT_THRESHOLD == 0.6


@pytest.mark.parametrize(
    ("score", "band"),
    [
        (1.0, "critical"),
        (0.9, "critical"),
        (0.8999, "high"),
        (0.7, "high"),
        (0.6999, "medium"),
        (0.5, "medium"),
        (0.4999, None),
        (0.0, None),
    ],
)
def test_bands_include_their_lower_bound(score: float, band: str | None) -> None:
    assert severity(score) == band


@pytest.mark.parametrize("score", [-0.1, 1.01, float("nan"), float("inf")])
def test_scores_outside_zero_one_are_refused(score: float) -> None:
    with pytest.raises(ValueError, match=r"anomaly score must be a finite number in \[0, 1\]"):
        severity(score)
