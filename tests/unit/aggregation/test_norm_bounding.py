import pytest
import torch

from fedmesh.aggregation import norm_bounding


def test_norm_bounding_scales_long_updates_then_averages_by_weight() -> None:
    updates = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])

    result = norm_bounding(updates, bound=1.0, weights=[1.0, 2.0, 1.0])

    expected = (torch.tensor([0.6, 0.8]) * 1 + torch.tensor([0.3, 0.4]) * 2) / 4
    assert torch.allclose(result.aggregate, expected)
    assert result.clipped == (0,)
    assert result.evidence[0].score == pytest.approx(5.0)
    assert result.evidence[0].reason == "norm 5 above the bound 1.0: scaled by 0.2"
    assert result.evidence[1].reason == "norm 0.5 within the bound 1.0: kept whole"
    assert result.excluded == ()


def test_norm_bounding_output_never_exceeds_the_bound() -> None:
    generator = torch.Generator().manual_seed(3)
    updates = torch.randn(6, 50, generator=generator) * 1e6

    result = norm_bounding(updates, bound=2.0)

    assert float(result.aggregate.norm()) <= 2.0 + 1e-5


def test_norm_bounding_refuses_a_non_positive_bound() -> None:
    with pytest.raises(ValueError, match=r"bound must be > 0, got 0\.0"):
        norm_bounding(torch.ones(2, 2), bound=0.0)
