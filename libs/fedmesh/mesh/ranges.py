"""Physical bounds of every simulated feature, for checks on telemetry."""

from __future__ import annotations

import math

from fedmesh.mesh.config import MeshConfig


def feature_ranges(config: MeshConfig) -> dict[str, tuple[float, float]]:
    """Inclusive (low, high) of each feature the simulator can report under ``config``."""
    radio, traffic = config.radio, config.traffic
    worst_noise = radio.noise_floor_dbm + config.faults.interference_db[1]
    return {
        "rssi": (radio.rssi_floor_dbm, radio.max_rssi_dbm),
        "snr": (radio.rssi_floor_dbm - worst_noise, radio.max_rssi_dbm - radio.noise_floor_dbm),
        "loss_rate": (0.0, 1.0),
        "link_age": (0.0, math.inf),
        "latency": (traffic.backhaul_ms, traffic.route_timeout_ms),
        "throughput": (0.0, radio.max_rate_mbps),
        "cpu": (0.0, 100.0),
        "memory": (0.0, 100.0),
    }
