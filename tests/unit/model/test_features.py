import math

import pytest
import torch

from fedmesh.model import FEATURE_NAMES, FEATURE_SCALES, NUM_FEATURES, normalise


def test_feature_order_is_the_documented_one() -> None:
    assert FEATURE_NAMES == (
        "rssi",
        "snr",
        "loss_rate",
        "link_age",
        "latency",
        "throughput",
        "cpu",
        "memory",
    )
    assert NUM_FEATURES == 8


def test_typical_healthy_node_lands_near_zero() -> None:
    raw = torch.tensor([[-70.0, 25.0, 0.0, math.expm1(8.0), math.expm1(3.0), 25.0, 50.0, 50.0]])

    assert torch.allclose(normalise(raw), torch.zeros(1, 8), atol=1e-5)


def test_each_feature_uses_its_scale() -> None:
    raw = torch.tensor([[-55.0, 40.0, 0.2, math.expm1(10.0), math.expm1(4.5), 45.0, 75.0, 0.0]])

    expected = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -2.0]])
    assert torch.allclose(normalise(raw), expected, atol=1e-5)
    assert [s.log for s in FEATURE_SCALES] == [False, False, False, True, True] + [False] * 3


def test_batched_shapes_are_kept() -> None:
    raw = torch.rand(3, 5, 8) * 10

    assert normalise(raw).shape == (3, 5, 8)
    assert torch.allclose(normalise(raw)[1], normalise(raw[1]))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (torch.zeros(4, 7), r"shape \(4, 7\); expected \[\.\.\., 8\]"),
        (torch.zeros(4, 8, dtype=torch.long), "dtype torch.int64; expected a float dtype"),
        (torch.full((2, 8), float("nan")), "NaN or Inf"),
        (torch.tensor([[0.0, 0, 0, -1.0, 0, 0, 0, 0]]), "link_age and latency must be >= 0"),
    ],
)
def test_bad_telemetry_is_refused(raw: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalise(raw)
