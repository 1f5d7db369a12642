import math

import pytest
import torch

from fedmesh.privacy.clipping import clip_l2


def test_delta_above_the_norm_is_scaled_to_at_most_the_clip_norm() -> None:
    delta = torch.tensor([3.0, 4.0])

    clipped = clip_l2(delta, 1.0)

    assert clipped.clipped is True
    assert clipped.original_norm == pytest.approx(5.0)
    norm = float(torch.linalg.vector_norm(clipped.tensor, dtype=torch.float64))
    assert norm <= 1.0
    assert norm == pytest.approx(1.0, rel=1e-6)
    assert torch.allclose(clipped.tensor, torch.tensor([0.6, 0.8]))


def test_delta_within_the_norm_is_returned_unchanged() -> None:
    delta = torch.tensor([0.3, -0.4])

    clipped = clip_l2(delta, 1.0)

    assert clipped.clipped is False
    assert clipped.original_norm == pytest.approx(0.5)
    assert torch.equal(clipped.tensor, delta)


def test_large_float32_delta_never_exceeds_the_clip_norm_after_rounding() -> None:
    generator = torch.Generator().manual_seed(3)
    for _ in range(20):
        delta = torch.randn(100_000, generator=generator) * 7.0

        clipped = clip_l2(delta, 1.0)

        assert clipped.tensor.dtype == torch.float32
        assert float(torch.linalg.vector_norm(clipped.tensor, dtype=torch.float64)) <= 1.0


def test_direction_is_preserved() -> None:
    delta = torch.tensor([[1.0, -2.0], [2.0, 4.0]])

    clipped = clip_l2(delta, 0.5)

    assert clipped.tensor.shape == (2, 2)
    ratio = clipped.tensor / delta
    assert torch.allclose(ratio, torch.full_like(ratio, 0.5 / 5.0))


@pytest.mark.parametrize("clip_norm", [0.0, -1.0, math.inf, math.nan])
def test_non_positive_or_non_finite_clip_norm_is_refused(clip_norm: float) -> None:
    with pytest.raises(ValueError, match="clip_norm must be a finite positive number"):
        clip_l2(torch.ones(3), clip_norm)


def test_nan_delta_is_refused() -> None:
    with pytest.raises(ValueError, match="delta contains NaN or Inf"):
        clip_l2(torch.tensor([1.0, math.nan]), 1.0)


def test_integer_delta_is_refused() -> None:
    with pytest.raises(ValueError, match=r"floating-point tensor, got dtype torch\.int64"):
        clip_l2(torch.tensor([1, 2]), 1.0)
