"""Differential privacy (clipping, noise, accounting) and secure aggregation for fedmesh.

Names load on first use: the accountant (used by the coordinator) needs no torch,
the clipping and noise functions do.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_LAZY = {
    "BudgetDecision": "accountant",
    "BudgetStatus": "accountant",
    "PrivacyBudgetExceeded": "accountant",
    "PrivacyLedger": "accountant",
    "SampledGaussianAccountant": "accountant",
    "calibrate_noise_multiplier": "accountant",
    "ClippedDelta": "clipping",
    "clip_l2": "clipping",
    "ChaChaRandom": "csprng",
    "add_central_noise": "noise",
    "distributed_noise_share": "noise",
    "distributed_noise_stddev": "noise",
    "gaussian_noise": "noise",
    "noise_stddev": "noise",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"fedmesh.privacy.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'fedmesh.privacy' has no attribute {name!r}")


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
