"""Radio link model: path loss to RSSI, SNR to frame loss and to capacity."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedmesh.mesh.config import RadioConstants

Floats = NDArray[np.float64]


def mean_rssi_dbm(distance_m: Floats, shadowing_db: Floats, radio: RadioConstants) -> Floats:
    """Log-distance path loss from a 1 m reference, less log-normal shadowing."""
    distance = np.maximum(distance_m, 1.0)
    path_loss = radio.reference_loss_db + 10.0 * radio.path_loss_exponent * np.log10(distance)
    rssi: Floats = radio.tx_power_dbm - path_loss - shadowing_db
    return np.clip(rssi, radio.rssi_floor_dbm, radio.max_rssi_dbm)


def link_range_m(radio: RadioConstants, margin_db: float) -> float:
    """Distance at which the mean path loss alone brings RSSI to the link threshold plus
    ``margin_db`` of shadowing; no link exists beyond it."""
    budget = radio.tx_power_dbm - radio.reference_loss_db - radio.link_threshold_dbm + margin_db
    return float(10.0 ** (budget / (10.0 * radio.path_loss_exponent)))


def frame_loss(snr_db: Floats, radio: RadioConstants) -> Floats:
    """Frame error rate: a logistic curve in SNR, 0.5 at ``snr_half_loss_db``."""
    exponent = np.clip((snr_db - radio.snr_half_loss_db) / radio.loss_slope_db, -50.0, 50.0)
    loss: Floats = 1.0 / (1.0 + np.exp(exponent))
    return loss


def capacity_mbps(snr_db: Floats, radio: RadioConstants) -> Floats:
    """PHY rate: a share of the Shannon capacity, capped at the PHY's highest rate."""
    shannon = radio.bandwidth_mhz * np.log2(1.0 + 10.0 ** (snr_db / 10.0))
    rate: Floats = np.minimum(radio.spectral_efficiency * shannon, radio.max_rate_mbps)
    return rate
