"""Byzantine attacks for experiments: each builds the Byzantine updates from honest ones.

`sign_flip` and `scaling` corrupt what the Byzantine nodes computed themselves;
`gaussian_noise` ignores the data; `alie`, `ipm` and `mimic` are omniscient and
read every honest update; `flip_labels` is the data-level label-flipping attack.
"""

from __future__ import annotations

import math

import torch


def sign_flip(own: torch.Tensor) -> torch.Tensor:
    """Send the negated honest update (reversed-gradient attack)."""
    return -own


def scaling(own: torch.Tensor, factor: float) -> torch.Tensor:
    """Send the honest update multiplied by `factor` (boosting / model replacement)."""
    return own * factor


def gaussian_noise(
    honest: torch.Tensor, f: int, std: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Send f vectors of N(0, std²) noise, shaped like the honest updates."""
    _check(honest, f)
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std}")
    noise = torch.randn(f, honest.shape[1], generator=generator, dtype=honest.dtype)
    return (noise * std).to(honest.device)


def flip_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Label flipping: class y becomes num_classes − 1 − y, for Byzantine nodes' training data."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be ≥ 2, got {num_classes}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    return num_classes - 1 - labels


def alie_z(n: int, f: int) -> float:
    """ALIE's z_max = Φ⁻¹((n − s)/n) with s = ⌊n/2 + 1⌋ − f (Baruch et al., 2019)."""
    if not 0 < f < n:
        raise ValueError(f"ALIE needs 0 < f < n, got n={n}, f={f}")
    supporters = math.floor(n / 2 + 1) - f
    return float(torch.special.ndtri(torch.tensor((n - supporters) / n, dtype=torch.float64)))


def alie(honest: torch.Tensor, f: int, n: int, z: float | None = None) -> torch.Tensor:
    """A little is enough: every Byzantine sends μ − z·σ of the honest updates, per coordinate."""
    _check(honest, f)
    if honest.shape[0] < 2:
        raise ValueError("ALIE needs at least 2 honest updates to estimate their spread")
    z_value = alie_z(n, f) if z is None else z
    mean = honest.mean(dim=0)
    std = honest.std(dim=0)
    return (mean - z_value * std).expand(f, -1).clone()


def ipm(honest: torch.Tensor, f: int, epsilon: float = 0.1) -> torch.Tensor:
    """Inner-product manipulation (Xie et al., 2020): every Byzantine sends −ε·mean(honest)."""
    _check(honest, f)
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    return (-epsilon * honest.mean(dim=0)).expand(f, -1).clone()


def mimic(honest: torch.Tensor, f: int, target: int | None = None) -> torch.Tensor:
    """Mimic (Karimireddy, He & Jaggi, 2022): every Byzantine copies one honest update.

    The copied update is `target`, or by default the honest update farthest from
    the honest mean, which over-represents the most atypical data.
    """
    _check(honest, f)
    if target is None:
        target = int(torch.argmax((honest - honest.mean(dim=0)).norm(dim=1)))
    if not 0 <= target < honest.shape[0]:
        raise ValueError(f"target must index an honest update (0..{honest.shape[0] - 1})")
    return honest[target].expand(f, -1).clone()


def _check(honest: torch.Tensor, f: int) -> None:
    if honest.dim() != 2 or honest.shape[0] < 1:
        raise ValueError(f"honest must be an h×m tensor with h ≥ 1, got {tuple(honest.shape)}")
    if f < 1:
        raise ValueError(f"f must be ≥ 1 Byzantine update, got {f}")
