"""Detector decision threshold and the severity bands alerts use (DESIGN.md §4, §8)."""

from __future__ import annotations

import math
from typing import Literal

DEFAULT_THRESHOLD = 0.6
"""Decision threshold used when validation data cannot choose one."""

Severity = Literal["critical", "high", "medium"]

SEVERITY_BANDS: tuple[tuple[float, Severity], ...] = (
    (0.9, "critical"),
    (0.7, "high"),
    (0.5, "medium"),
)
"""Lower bound of each band, highest first: a score at the bound belongs to the band."""


def severity(score: float) -> Severity | None:
    """Map an anomaly score in [0, 1] to its severity band; ``None`` below 0.5."""
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        raise ValueError(f"anomaly score must be a finite number in [0, 1]; got {score!r}")
    for bound, band in SEVERITY_BANDS:
        if score >= bound:
            return band
    return None
