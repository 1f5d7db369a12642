"""Central differential privacy: Gaussian noise on the clipped sum, ε from the accountant."""

from __future__ import annotations

import torch

from fedmesh.privacy import ChaChaRandom, SampledGaussianAccountant, add_central_noise, noise_stddev
from fedmesh.services.aggregator.central_privacy import PrivacySettings, PrivateAggregate


class GaussianCentralPrivacy:
    """Adds N(0, (z·C)²) to the sum of the clipped updates and reports the run's ε so far.

    Noise comes from a ChaCha20 keystream keyed by the OS (``ChaChaRandom``). The ε of
    round r is the RDP accountant's bound for r rounds at the run's sampling rate
    (1.0 when the run gives none: no amplification is claimed). Counting every round
    up to r, failed ones included, can only overstate ε, never understate it.
    """

    def __init__(self, rng: ChaChaRandom | None = None) -> None:
        self._rng = rng

    def __call__(
        self, aggregate: torch.Tensor, settings: PrivacySettings, contributors: int, round_no: int
    ) -> PrivateAggregate:
        """The noised mean of ``contributors`` clipped updates, and ε after ``round_no`` rounds."""
        sigma = noise_stddev(settings.noise_multiplier, settings.clip_norm)
        total = aggregate.to(torch.float64) * contributors
        noised = add_central_noise(total, sigma, contributors, self._rng)
        return PrivateAggregate(noised.to(torch.float32), epsilon_after(settings, round_no))


def epsilon_after(settings: PrivacySettings, round_no: int) -> float:
    """The RDP bound on ε after ``round_no`` rounds at the run's rate (0 counts as 1.0)."""
    accountant = SampledGaussianAccountant(
        settings.sampling_rate or 1.0, settings.noise_multiplier, settings.delta
    )
    return accountant.epsilon_spent(round_no)
