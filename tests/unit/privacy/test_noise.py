import math

import pytest
import torch

from fedmesh.privacy.csprng import ChaChaRandom
from fedmesh.privacy.noise import (
    add_central_noise,
    distributed_noise_share,
    distributed_noise_stddev,
    gaussian_noise,
    noise_stddev,
)

SEED = b"\x07" * 32


def test_noise_stddev_is_multiplier_times_clip_norm() -> None:
    assert noise_stddev(1.1, 1.0) == pytest.approx(1.1)
    assert noise_stddev(0.5, 2.0) == pytest.approx(1.0)


def test_gaussian_noise_has_the_requested_standard_deviation() -> None:
    noise = gaussian_noise((200_000,), 2.5, ChaChaRandom.from_seed(SEED))

    assert noise.dtype == torch.float32
    assert float(noise.mean()) == pytest.approx(0.0, abs=0.02)
    assert float(noise.std()) == pytest.approx(2.5, rel=0.01)


def test_central_noise_is_added_to_the_sum_then_divided_by_the_contributors() -> None:
    aggregate = torch.full((100_000,), 40.0)

    mean = add_central_noise(
        aggregate, sigma=1.1, num_contributors=10.0, rng=ChaChaRandom.from_seed(SEED)
    )

    assert mean.dtype == torch.float32
    assert float(mean.mean()) == pytest.approx(4.0, abs=0.003)
    assert float(mean.std()) == pytest.approx(0.11, rel=0.01)


def test_central_noise_with_zero_sigma_is_the_plain_mean() -> None:
    mean = add_central_noise(torch.tensor([2.0, 4.0]), sigma=0.0, num_contributors=2.0)

    assert torch.equal(mean, torch.tensor([1.0, 2.0]))


def test_distributed_shares_of_the_minimum_survivors_sum_to_the_target_variance() -> None:
    rng = ChaChaRandom.from_seed(SEED)
    sigma, n_min = 1.1, 8

    total = sum(distributed_noise_share((100_000,), sigma, n_min, rng=rng) for _ in range(n_min))

    assert isinstance(total, torch.Tensor)
    assert float(total.std()) == pytest.approx(sigma, rel=0.01)


def test_distributed_shares_cover_colluders_that_subtract_their_own() -> None:
    rng = ChaChaRandom.from_seed(SEED)
    sigma, n_min, colluders = 1.0, 10, 3
    honest = n_min - colluders

    honest_total = sum(
        distributed_noise_share((100_000,), sigma, n_min, colluders, rng=rng) for _ in range(honest)
    )

    assert isinstance(honest_total, torch.Tensor)
    assert float(honest_total.std()) == pytest.approx(sigma, rel=0.01)
    assert distributed_noise_stddev(1.0, 10, 3) == pytest.approx(1 / math.sqrt(7))


def test_colluders_must_be_fewer_than_the_minimum_contributors() -> None:
    with pytest.raises(
        ValueError, match=r"min_contributors \(3\) must exceed tolerated_colluders \(3\)"
    ):
        distributed_noise_stddev(1.0, 3, 3)


@pytest.mark.parametrize("sigma", [-1.0, math.nan, math.inf])
def test_invalid_sigma_is_refused(sigma: float) -> None:
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        gaussian_noise((3,), sigma)


def test_zero_contributors_is_refused() -> None:
    with pytest.raises(ValueError, match="num_contributors must be finite and > 0, got 0"):
        add_central_noise(torch.ones(2), 1.0, 0)


def test_integer_aggregate_is_refused() -> None:
    with pytest.raises(ValueError, match="aggregate_sum must be floating point"):
        add_central_noise(torch.ones(2, dtype=torch.int32), 1.0, 2)
