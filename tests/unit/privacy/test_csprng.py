import math

import pytest
import torch

from fedmesh.privacy.csprng import ChaChaRandom

SEED = bytes(range(32))


def test_seeded_generators_repeat_and_unseeded_ones_differ() -> None:
    assert ChaChaRandom.from_seed(SEED).random_bytes(64) == ChaChaRandom.from_seed(
        SEED
    ).random_bytes(64)
    assert ChaChaRandom().random_bytes(32) != ChaChaRandom().random_bytes(32)


def test_successive_draws_never_reuse_keystream() -> None:
    rng = ChaChaRandom.from_seed(SEED)

    first, second = rng.random_bytes(64), rng.random_bytes(64)

    assert first != second


def test_uniforms_lie_strictly_inside_the_unit_interval_with_uniform_moments() -> None:
    u = ChaChaRandom.from_seed(SEED).uniform(200_000)

    assert u.dtype == torch.float64
    assert bool((u > 0).all())
    assert bool((u < 1).all())
    assert float(u.mean()) == pytest.approx(0.5, abs=0.003)
    assert float(u.var()) == pytest.approx(1 / 12, abs=0.001)


def test_standard_normal_has_zero_mean_unit_variance_and_gaussian_tails() -> None:
    z = ChaChaRandom.from_seed(SEED).standard_normal((300_001,), torch.float64)

    assert z.shape == (300_001,)
    assert float(z.mean()) == pytest.approx(0.0, abs=0.006)
    assert float(z.std()) == pytest.approx(1.0, abs=0.005)
    # P(|Z| > 2) = 0.0455 for a standard normal.
    assert float((z.abs() > 2).double().mean()) == pytest.approx(0.0455, abs=0.002)
    assert float((z**3).mean()) == pytest.approx(0.0, abs=0.03)
    assert float((z**4).mean()) == pytest.approx(3.0, abs=0.06)


def test_standard_normal_respects_shape_and_dtype() -> None:
    z = ChaChaRandom.from_seed(SEED).standard_normal((3, 5), torch.float32)

    assert z.shape == (3, 5)
    assert z.dtype == torch.float32
    assert bool(torch.isfinite(z).all())


def test_seed_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="seed must be 32 bytes, got 3"):
        ChaChaRandom.from_seed(b"abc")


def test_negative_byte_count_is_refused() -> None:
    with pytest.raises(ValueError, match="count must be >= 0"):
        ChaChaRandom().random_bytes(-1)


def test_box_muller_pairs_are_uncorrelated() -> None:
    z = ChaChaRandom.from_seed(SEED).standard_normal((200_000,), torch.float64)

    half = z.shape[0] // 2
    correlation = float(torch.corrcoef(torch.stack((z[:half], z[half:])))[0, 1])

    assert abs(correlation) < 0.01
    assert not math.isnan(correlation)
