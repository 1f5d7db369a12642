"""Gaussian noise for DP-FedAvg: central (added once by the aggregator) or split across nodes."""

from __future__ import annotations

import math

import torch

from fedmesh.privacy.csprng import ChaChaRandom


def noise_stddev(noise_multiplier: float, clip_norm: float) -> float:
    """The noise standard deviation σ = z·C on the sum of clipped updates."""
    _require_positive("noise_multiplier", noise_multiplier, allow_zero=True)
    _require_positive("clip_norm", clip_norm)
    return noise_multiplier * clip_norm


def gaussian_noise(
    shape: tuple[int, ...],
    sigma: float,
    rng: ChaChaRandom | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """N(0, σ²) samples of `shape` from a cryptographically secure generator."""
    _require_positive("sigma", sigma, allow_zero=True)
    source = rng if rng is not None else ChaChaRandom()
    return source.standard_normal(shape, torch.float64).mul_(sigma).to(dtype)


def add_central_noise(
    aggregate_sum: torch.Tensor,
    sigma: float,
    num_contributors: float,
    rng: ChaChaRandom | None = None,
) -> torch.Tensor:
    """The noised mean (Σ clipped deltas + N(0, σ²I)) / num_contributors.

    For the accountant's guarantee under Poisson sampling at rate q over N
    nodes, `num_contributors` is the fixed expected count q·N, not the number
    that actually reported (which would depend on one node's presence).
    """
    if not aggregate_sum.is_floating_point():
        raise ValueError(f"aggregate_sum must be floating point, got dtype {aggregate_sum.dtype}")
    _require_positive("num_contributors", num_contributors)
    noise = gaussian_noise(tuple(aggregate_sum.shape), sigma, rng, torch.float64)
    noised = aggregate_sum.to(torch.float64) + noise
    return (noised / num_contributors).to(aggregate_sum.dtype)


def distributed_noise_stddev(
    sigma: float, min_contributors: int, tolerated_colluders: int = 0
) -> float:
    """Per-node share σ / √(n_min − c) so any n_min surviving shares sum to variance ≥ σ².

    With S ≥ n_min surviving nodes, c of them colluding (they know and can
    subtract their own shares), the noise left in the sum has variance
    (S − c)·σ² / (n_min − c) ≥ σ². Fewer than n_min survivors leaves less
    noise than the accountant assumed, so secure aggregation must abort below
    n_min (`SecAggConfig.min_survivors` ≥ n_min).
    """
    _require_positive("sigma", sigma, allow_zero=True)
    if tolerated_colluders < 0:
        raise ValueError(f"tolerated_colluders must be >= 0, got {tolerated_colluders}")
    if min_contributors <= tolerated_colluders:
        raise ValueError(
            f"min_contributors ({min_contributors}) must exceed tolerated_colluders "
            f"({tolerated_colluders}): the honest survivors must carry the noise"
        )
    return sigma / math.sqrt(min_contributors - tolerated_colluders)


def distributed_noise_share(
    shape: tuple[int, ...],
    sigma: float,
    min_contributors: int,
    tolerated_colluders: int = 0,
    rng: ChaChaRandom | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """One node's noise share N(0, σ²/(n_min − c)), added to its clipped delta before masking."""
    share_sigma = distributed_noise_stddev(sigma, min_contributors, tolerated_colluders)
    return gaussian_noise(shape, share_sigma, rng, dtype)


def _require_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if not math.isfinite(value) or value < 0.0 or (value == 0.0 and not allow_zero):
        expected = "finite and >= 0" if allow_zero else "finite and > 0"
        raise ValueError(f"{name} must be {expected}, got {value}")
