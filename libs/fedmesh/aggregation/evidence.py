"""Evidence shared by several rules."""

from __future__ import annotations

import torch

from fedmesh.aggregation.result import UpdateEvidence


class OutsideCounter:
    """Counts, per update, the coordinates whose value lay strictly outside the kept range."""

    def __init__(self, n: int, block_size: int, device: torch.device) -> None:
        self._counts = torch.zeros(n, dtype=torch.float64, device=device)
        self._clamped = torch.empty(n, block_size, dtype=torch.float32, device=device)
        # Comparisons land in a float buffer: summing floats is vectorised, summing bools is not.
        self._indicator = torch.empty(n, block_size, dtype=torch.float32, device=device)

    def add(self, block: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """Count the values of `block` (n×b) outside [low, high] (b values each).

        Returns `block` clamped into the range, valid until the next call: a value
        is outside exactly when clamping changed it.
        """
        width = block.shape[1]
        clamped = self._clamped[:, :width]
        torch.clamp(block, min=low, max=high, out=clamped)
        indicator = self._indicator[:, :width]
        torch.ne(block, clamped, out=indicator)
        self._counts += indicator.sum(dim=1)
        return clamped

    def shares(self, m: int) -> list[float]:
        """The share of the m coordinates at which each update lay outside."""
        return (self._counts / m).tolist()


def kept_in_full(n: int, why: str) -> list[UpdateEvidence]:
    """Evidence for rules that keep every update unscored, each with the same reason."""
    return [UpdateEvidence(i, None, excluded=False, clipped=False, reason=why) for i in range(n)]


def trimmed_share_evidence(shares: list[float], what: str, m: int) -> list[UpdateEvidence]:
    """Evidence from the share of coordinates at which each update's value was dropped.

    An update is excluded only when its value lay strictly outside the kept range
    at every one of the m coordinates, so no tie-breaking could have kept it.
    """
    evidence = []
    for index, share in enumerate(shares):
        excluded = share >= 1.0
        if excluded:
            reason = f"{what}: value outside the kept range at every one of {m} coordinates"
        else:
            reason = f"{what}: value outside the kept range at {share:.1%} of {m} coordinates"
        evidence.append(UpdateEvidence(index, share, excluded, clipped=False, reason=reason))
    return evidence
