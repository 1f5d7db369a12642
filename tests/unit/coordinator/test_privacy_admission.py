import pytest

from fedmesh.errors import FailedPrecondition, InvalidArgument
from fedmesh.privacy import SampledGaussianAccountant
from fedmesh.services.coordinator.control import check_feasible_privacy
from fedmesh.services.coordinator.spec import (
    PrivacySettings,
    RunSpec,
    SecureAggregationSettings,
    validate,
)


def private(rounds: int, **privacy: float) -> RunSpec:
    settings = PrivacySettings(enabled=True, **privacy)
    return RunSpec(model_name="m", rounds=rounds, target_participants=5, privacy=settings)


def test_a_budget_that_affords_every_round_is_accepted() -> None:
    spec = private(rounds=10, sampling_rate=0.01, epsilon_budget=1.0)

    check_feasible_privacy(spec)


def test_a_budget_too_small_for_the_rounds_is_refused_with_the_numbers() -> None:
    spec = private(rounds=5)  # DESIGN defaults: z 1.1, δ 1e-5, ε 1.0, no sampling amplification
    epsilon = SampledGaussianAccountant(1.0, 1.1, 1e-5).epsilon_spent(5)

    with pytest.raises(FailedPrecondition) as info:
        check_feasible_privacy(spec)

    assert str(info.value) == (
        f"privacy budget too small: 5 rounds at sampling rate 1.0 and noise multiplier 1.1 "
        f"spend ε = {epsilon:.3f} (δ = 1e-05), over the budget 1.0; the budget affords 0 rounds"
    )


def test_secure_aggregation_with_private_settings_is_accepted() -> None:
    spec = RunSpec(
        model_name="m",
        rounds=10,
        min_participants=4,
        target_participants=8,
        privacy=PrivacySettings(enabled=True, sampling_rate=0.01),
        secure_aggregation=SecureAggregationSettings(enabled=True, bucket_size=2),
    )

    check_feasible_privacy(validate(spec))


def test_impossible_privacy_parameters_are_invalid() -> None:
    spec = private(rounds=1, delta=1.5, noise_multiplier=0.0, sampling_rate=2.0)

    with pytest.raises(InvalidArgument) as info:
        validate(spec)

    message = str(info.value)
    assert "privacy.noise_multiplier is 0.0; expected a positive number" in message
    assert "privacy.delta is 1.5; expected a value in (0, 1)" in message
    assert "privacy.sampling_rate is 2.0; expected a value in [0, 1]" in message
