"""M/M/1/K queue of a relay: frames dropped at a full buffer and frames waiting."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float64]

_NEAR_ONE = 1e-6


def overflow_probability(utilisation: Floats, buffer_frames: int) -> Floats:
    """Share of arriving frames dropped because the buffer of ``buffer_frames`` is full."""
    rho = np.maximum(utilisation, 0.0)
    over = rho > 1.0
    # In r = min(rho, 1/rho) neither branch overflows: p = (1-r) r^K / (1-r^(K+1)) up to
    # capacity, and p = (1-r) / (1-r^(K+1)) above it.
    r = np.where(over, 1.0 / np.maximum(rho, 1.0), rho)
    near_one = np.abs(rho - 1.0) < _NEAR_ONE
    denominator = np.where(near_one, 1.0, 1.0 - r ** (buffer_frames + 1))
    drop = np.where(over, 1.0, r**buffer_frames) * (1.0 - r) / denominator
    result: Floats = np.where(near_one, 1.0 / (buffer_frames + 1), drop)
    return result


def mean_queue_frames(utilisation: Floats, buffer_frames: int) -> Floats:
    """Mean number of frames held (waiting or in service), between 0 and the buffer size."""
    k = buffer_frames
    rho = np.maximum(utilisation, 0.0)
    over = rho > 1.0
    # The queue at rho holds K minus the queue at 1/rho (the distribution mirrors).
    r = np.where(over, 1.0 / np.maximum(rho, 1.0), rho)
    near_one = np.abs(r - 1.0) < _NEAR_ONE
    safe = np.where(near_one, 0.5, r)
    length = safe / (1.0 - safe) - (k + 1) * safe ** (k + 1) / (1.0 - safe ** (k + 1))
    length = np.where(near_one, k / 2.0, length)
    result: Floats = np.clip(np.where(over, k - length, length), 0.0, float(k))
    return result
