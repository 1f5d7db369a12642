"""The seam where central differential privacy acts on a round's aggregate.

The aggregator itself adds no noise: a `CentralPrivacy` step is handed in by
the wiring. Without one, a round that asks for DP is refused rather than
published without the noise it claims (the original system's mistake).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from fedmesh.errors import FailedPrecondition


@dataclass(frozen=True)
class PrivacySettings:
    """A run's DP parameters as the coordinator sends them."""

    enabled: bool
    clip_norm: float
    noise_multiplier: float
    delta: float
    epsilon_budget: float
    sampling_rate: float


@dataclass(frozen=True)
class PrivateAggregate:
    """The aggregate after the privacy step, and the ε this round spent."""

    aggregate: torch.Tensor
    epsilon_spent: float


class CentralPrivacy(Protocol):
    """Takes the rule's aggregate (flat float32) and returns it privatised."""

    def __call__(
        self, aggregate: torch.Tensor, settings: PrivacySettings, contributors: int, round_no: int
    ) -> PrivateAggregate:
        """Privatise ``aggregate`` (the mean of ``contributors`` clipped updates) of a round."""
        ...


def require_privacy_step(settings: PrivacySettings, step: CentralPrivacy | None) -> None:
    """Refuse a DP round when no privacy step is configured."""
    if settings.enabled and step is None:
        raise FailedPrecondition(
            "the run asks for differential privacy, but this aggregator has no central "
            "privacy step configured; refusing to publish an aggregate without its noise"
        )
