"""Differential privacy (clipping, noise, accounting) and secure aggregation for fedmesh."""

from fedmesh.privacy.accountant import (
    BudgetDecision,
    BudgetStatus,
    PrivacyBudgetExceeded,
    PrivacyLedger,
    SampledGaussianAccountant,
    calibrate_noise_multiplier,
)
from fedmesh.privacy.clipping import ClippedDelta, clip_l2
from fedmesh.privacy.csprng import ChaChaRandom
from fedmesh.privacy.noise import (
    add_central_noise,
    distributed_noise_share,
    distributed_noise_stddev,
    gaussian_noise,
    noise_stddev,
)

__all__ = [
    "BudgetDecision",
    "BudgetStatus",
    "ChaChaRandom",
    "ClippedDelta",
    "PrivacyBudgetExceeded",
    "PrivacyLedger",
    "SampledGaussianAccountant",
    "add_central_noise",
    "calibrate_noise_multiplier",
    "clip_l2",
    "distributed_noise_share",
    "distributed_noise_stddev",
    "gaussian_noise",
    "noise_stddev",
]
