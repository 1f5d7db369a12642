import pytest

from fedmesh.services.alerting.durations import parse_duration_ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("0", 0),
        ("0s", 0),
        ("250ms", 250),
        ("30s", 30_000),
        ("5m", 300_000),
        ("1h30m", 5_400_000),
        ("4h", 14_400_000),
        ("1d", 86_400_000),
        ("1w", 604_800_000),
        ("1y", 31_536_000_000),
        (" 10s ", 10_000),
    ],
)
def test_parses_prometheus_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "5", "5 m", "m5", "1.5h", "30m1h", "-1s", "1sec"])
def test_refuses_malformed_durations(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected e\.g\. 500ms, 30s, 5m, 1h30m"):
        parse_duration_ms(text)
