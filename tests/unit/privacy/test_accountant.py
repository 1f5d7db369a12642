"""Accountant vectors for dp-accounting 0.6.0: RDP of the Poisson-sampled Gaussian at RDP_ORDERS,
converted to (ε, δ) by ε = min_α RDP(α) + log1p(−1/α) − log(δ·α)/(α − 1) (Canonne et al. 2020)."""

import math

import pytest

from fedmesh.privacy.accountant import (
    RDP_ORDERS,
    SampledGaussianAccountant,
    calibrate_noise_multiplier,
)

DELTA = 1e-5


@pytest.mark.parametrize(
    ("sampling_rate", "noise_multiplier", "rounds", "epsilon", "order"),
    [
        (0.01, 1.1, 100, 0.9560911044993916, 10.7),
        (0.01, 1.1, 1000, 1.7117701662429012, 9.6),
        (0.1, 1.1, 10, 2.8379847291259637, 5.3),
        (0.05, 0.8, 200, 8.743239135583078, 2.9),
        (1.0, 1.1, 1, 4.239640834979211, 5.9),
        (1.0, 2.0, 50, 22.019852327713252, 2.3),
    ],
)
def test_epsilon_matches_the_pinned_library_vectors(
    sampling_rate: float, noise_multiplier: float, rounds: int, epsilon: float, order: float
) -> None:
    accountant = SampledGaussianAccountant(sampling_rate, noise_multiplier, DELTA)

    assert accountant.epsilon_spent(rounds) == pytest.approx(epsilon, rel=1e-9)
    assert accountant.optimal_order(rounds) == pytest.approx(order)


@pytest.mark.parametrize(("noise_multiplier", "rounds"), [(1.1, 1), (2.0, 50), (5.0, 7)])
def test_full_participation_matches_the_closed_form_gaussian_rdp(
    noise_multiplier: float, rounds: int
) -> None:
    # Without sampling, r rounds of the Gaussian mechanism have RDP r·α / (2z²).
    expected = min(
        rounds * order / (2 * noise_multiplier**2)
        + math.log1p(-1 / order)
        - math.log(DELTA * order) / (order - 1)
        for order in RDP_ORDERS
    )

    spent = SampledGaussianAccountant(1.0, noise_multiplier, DELTA).epsilon_spent(rounds)

    assert spent == pytest.approx(expected, rel=1e-9)


def test_no_rounds_spend_nothing_and_epsilon_grows_with_rounds() -> None:
    accountant = SampledGaussianAccountant(1.0, 2.0, DELTA)

    spent = [accountant.epsilon_spent(rounds) for rounds in range(6)]

    assert spent[0] == 0.0
    assert spent == sorted(spent)
    assert len(set(spent)) == len(spent)


def test_calibrated_noise_multiplier_is_the_smallest_within_the_budget() -> None:
    z = calibrate_noise_multiplier(3.0, 1.0, 5, DELTA)

    assert SampledGaussianAccountant(1.0, z, DELTA).epsilon_spent(5) <= 3.0
    assert SampledGaussianAccountant(1.0, z - 0.001, DELTA).epsilon_spent(5) > 3.0


@pytest.mark.parametrize(
    ("sampling_rate", "noise_multiplier", "delta", "message"),
    [
        (0.0, 1.0, DELTA, r"sampling_rate must be in \(0, 1\], got 0.0"),
        (1.5, 1.0, DELTA, r"sampling_rate must be in \(0, 1\], got 1.5"),
        (0.1, 0.0, DELTA, "noise_multiplier must be finite and > 0, got 0.0"),
        (0.1, 1.0, 0.0, r"delta must be in \(0, 1\), got 0.0"),
    ],
)
def test_invalid_parameters_are_refused(
    sampling_rate: float, noise_multiplier: float, delta: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        SampledGaussianAccountant(sampling_rate, noise_multiplier, delta)


def test_negative_rounds_are_refused() -> None:
    with pytest.raises(ValueError, match="rounds must be >= 0, got -1"):
        SampledGaussianAccountant(1.0, 1.0, DELTA).epsilon_spent(-1)


def test_calibration_refuses_a_non_positive_target() -> None:
    with pytest.raises(ValueError, match="target_epsilon must be finite and > 0"):
        calibrate_noise_multiplier(0.0, 0.1, 10, DELTA)
