"""The detector's input: eight per-node telemetry features and their fixed normalisation."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FeatureScale:
    """How one raw feature becomes a model input: ``(f(x) - offset) / scale``.

    ``f`` is ``log1p`` when ``log`` is set (heavy-tailed features), else the identity.
    """

    name: str
    unit: str
    offset: float
    scale: float
    log: bool = False


FEATURE_SCALES: tuple[FeatureScale, ...] = (
    FeatureScale("rssi", "dBm", offset=-70.0, scale=15.0),
    FeatureScale("snr", "dB", offset=25.0, scale=15.0),
    FeatureScale("loss_rate", "fraction", offset=0.0, scale=0.2),
    FeatureScale("link_age", "s", offset=8.0, scale=2.0, log=True),
    FeatureScale("latency", "ms", offset=3.0, scale=1.5, log=True),
    FeatureScale("throughput", "Mbps", offset=25.0, scale=20.0),
    FeatureScale("cpu", "%", offset=50.0, scale=25.0),
    FeatureScale("memory", "%", offset=50.0, scale=25.0),
)
"""Fixed scales, in the feature order every node reports (see docs/detector.md)."""

FEATURE_NAMES: tuple[str, ...] = tuple(scale.name for scale in FEATURE_SCALES)
NUM_FEATURES = len(FEATURE_SCALES)

_OFFSETS = torch.tensor([s.offset for s in FEATURE_SCALES], dtype=torch.float32)
_SCALES = torch.tensor([s.scale for s in FEATURE_SCALES], dtype=torch.float32)
_LOG = torch.tensor([s.log for s in FEATURE_SCALES], dtype=torch.bool)


def normalise(raw_features: torch.Tensor) -> torch.Tensor:
    """Map raw telemetry ``[..., 8]`` (feature order of ``FEATURE_NAMES``) to model inputs.

    Raises ``ValueError`` for a wrong last dimension, a non-floating dtype, non-finite
    values, or a negative value in a log-scaled feature (link age, latency).
    """
    if raw_features.ndim < 1 or raw_features.shape[-1] != NUM_FEATURES:
        raise ValueError(
            f"raw features have shape {tuple(raw_features.shape)}; "
            f"expected [..., {NUM_FEATURES}] in the order {', '.join(FEATURE_NAMES)}"
        )
    if not raw_features.is_floating_point():
        raise ValueError(f"raw features have dtype {raw_features.dtype}; expected a float dtype")
    raw = raw_features.to(torch.float32)
    if not bool(torch.isfinite(raw).all()):
        raise ValueError("raw features contain NaN or Inf; every value must be finite")
    logged = raw[..., _LOG]
    if bool((logged < 0).any()):
        names = [s.name for s in FEATURE_SCALES if s.log]
        raise ValueError(f"{' and '.join(names)} must be >= 0; got a negative value")
    transformed = torch.where(_LOG, torch.log1p(raw.clamp_min(0.0)), raw)
    return (transformed - _OFFSETS) / _SCALES
