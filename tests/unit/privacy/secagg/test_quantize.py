import math

import numpy as np
import pytest
import torch

from fedmesh.privacy.secagg.quantize import WORD, FixedPointCodec


def test_scale_is_the_largest_that_keeps_the_sum_inside_int32() -> None:
    codec = FixedPointCodec(clip_range=1.0, max_summands=100)

    assert codec.scale == pytest.approx((2**31 - 1 - 100) / 100)
    assert codec.resolution == pytest.approx(1 / codec.scale)


@pytest.mark.parametrize("extreme", [1.0, -1.0])
def test_the_extreme_sum_decodes_without_wrapping(extreme: float) -> None:
    codec = FixedPointCodec(clip_range=1.0, max_summands=50)
    total = np.zeros(3, dtype=WORD)
    for _ in range(50):
        np.add(total, codec.quantize(torch.full((3,), extreme)), out=total)

    decoded = codec.dequantize_sum(total)

    assert torch.allclose(decoded, torch.full((3,), 50 * extreme), atol=50 * codec.resolution)


def test_sum_of_encodings_decodes_to_the_float_sum_within_the_rounding_bound() -> None:
    codec = FixedPointCodec(clip_range=0.5, max_summands=20)
    generator = torch.Generator().manual_seed(11)
    values = [torch.rand(1000, generator=generator) - 0.5 for _ in range(20)]
    total = np.zeros(1000, dtype=WORD)
    for value in values:
        np.add(total, codec.quantize(value), out=total)

    error = (codec.dequantize_sum(total).double() - torch.stack(values).double().sum(0)).abs().max()

    assert float(error) <= 20 / (2 * codec.scale) + 1e-6
    assert torch.allclose(codec.dequantize_mean(total, 20), torch.stack(values).mean(0), atol=1e-6)


def test_negative_values_are_twos_complement_words() -> None:
    codec = FixedPointCodec(clip_range=1.0, max_summands=1)

    words = codec.quantize(torch.tensor([-1.0 / codec.scale, 0.0, 2.0 / codec.scale]))

    assert words.dtype == WORD
    assert words.tolist() == [2**32 - 1, 0, 2]


def test_values_outside_the_range_are_clamped() -> None:
    codec = FixedPointCodec(clip_range=1.0, max_summands=4)

    decoded = codec.dequantize_sum(codec.quantize(torch.tensor([7.0, -3.0])))

    assert torch.allclose(decoded, torch.tensor([1.0, -1.0]))


def test_non_finite_values_are_refused() -> None:
    codec = FixedPointCodec(clip_range=1.0, max_summands=4)

    with pytest.raises(ValueError, match="values contain NaN or Inf"):
        codec.quantize(torch.tensor([0.0, math.inf]))


def test_non_flat_input_is_refused() -> None:
    codec = FixedPointCodec(clip_range=1.0, max_summands=4)

    with pytest.raises(
        ValueError, match=r"expected a 1-D floating-point tensor, got shape \(2, 2\)"
    ):
        codec.quantize(torch.zeros(2, 2))


def test_mean_count_must_be_within_the_summands() -> None:
    codec = FixedPointCodec(clip_range=1.0, max_summands=4)

    with pytest.raises(ValueError, match=r"count must be in \[1, 4\], got 5"):
        codec.dequantize_mean(np.zeros(2, dtype=WORD), 5)


@pytest.mark.parametrize(
    ("clip_range", "max_summands", "message"),
    [
        (0.0, 4, "clip_range must be finite and > 0"),
        (math.nan, 4, "clip_range must be finite and > 0"),
        (1.0, 0, r"max_summands must be in \[1, 2\^30\), got 0"),
    ],
)
def test_invalid_codecs_are_refused(clip_range: float, max_summands: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FixedPointCodec(clip_range, max_summands)
