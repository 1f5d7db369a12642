"""Configuration of a simulated mesh: size, radio, traffic and fault constants."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from fedmesh.model.labels import FAULT_KINDS


@dataclass(frozen=True)
class RadioConstants:
    """Log-distance path loss with shadowing, a thermal noise floor and an 802.11n-like PHY."""

    tx_power_dbm: float = 20.0
    reference_loss_db: float = 40.0
    """Path loss at 1 m (free space at 2.4 GHz)."""
    path_loss_exponent: float = 3.0
    shadowing_sigma_db: float = 4.0
    """Log-normal shadowing, fixed per link."""
    fading_sigma_db: float = 1.5
    """Fast fading, drawn afresh per link and step."""
    noise_floor_dbm: float = -95.0
    link_threshold_dbm: float = -82.0
    """A link belongs to the mesh when its mean RSSI reaches this."""
    sensitivity_dbm: float = -90.0
    """A link is down while its instantaneous RSSI is below this."""
    rssi_floor_dbm: float = -100.0
    """Reported RSSI of a node that hears no neighbour."""
    bandwidth_mhz: float = 20.0
    spectral_efficiency: float = 0.5
    """Share of the Shannon capacity left after PHY and MAC overhead."""
    max_rate_mbps: float = 72.2
    snr_half_loss_db: float = 6.0
    """SNR at which half of the frames are lost."""
    loss_slope_db: float = 1.5

    @property
    def max_rssi_dbm(self) -> float:
        """Strongest possible RSSI: transmit power less the loss at the 1 m reference."""
        return self.tx_power_dbm - self.reference_loss_db


@dataclass(frozen=True)
class TrafficConstants:
    """Per-node demand, forwarding, queueing and the host load it causes."""

    mean_demand_mbps: float = 0.3
    demand_spread: float = 0.5
    """Log-normal sigma of the per-node mean demand."""
    demand_persistence: float = 0.95
    """AR(1) coefficient of log-demand from step to step."""
    demand_noise: float = 0.1
    hop_service_ms: float = 2.0
    backhaul_ms: float = 5.0
    route_timeout_ms: float = 1000.0
    """Latency reported by a node without a route to any gateway."""
    buffer_frames: int = 50
    cpu_base_range: tuple[float, float] = (5.0, 45.0)
    cpu_per_mbps: float = 2.0
    cpu_noise: float = 2.0
    memory_base_range: tuple[float, float] = (20.0, 60.0)
    memory_per_queued_frame: float = 0.3
    memory_noise: float = 1.0
    latency_jitter: float = 0.1
    """Log-normal sigma of the measured latency around the modelled one."""
    mean_initial_link_age_s: float = 6 * 3600.0
    surge_rate: float = 2e-3
    """Benign traffic surges (not faults, never labelled) starting per node and step."""
    surge_factor: tuple[float, float] = (2.0, 8.0)
    surge_steps: tuple[int, int] = (5, 30)


@dataclass(frozen=True)
class FaultRates:
    """How often, where, for how long and how strongly faults are injected."""

    onset_rate: float = 5e-4
    """New fault instances per node and step, all kinds together."""
    kind_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)
    """Relative frequency of link degradation, overload, cascade, interference, partition."""
    duration_steps: tuple[int, int] = (10, 40)
    zones: int = 8
    """Spatial zones, each with its own fault mix."""
    mix_concentration: float = 0.5
    """Dirichlet concentration of the zones' mixes; smaller means less alike (non-IID)."""
    degradation_db: tuple[float, float] = (6.0, 20.0)
    overload_demand_factor: tuple[float, float] = (3.0, 20.0)
    overload_cpu: tuple[float, float] = (15.0, 55.0)
    overload_memory: tuple[float, float] = (5.0, 25.0)
    cascade_spread_probability: float = 0.1
    cascade_max_nodes: int = 12
    cascade_cpu: tuple[float, float] = (10.0, 35.0)
    cascade_memory: tuple[float, float] = (10.0, 35.0)
    cascade_loss: tuple[float, float] = (0.03, 0.25)
    interference_radius_m: tuple[float, float] = (80.0, 160.0)
    interference_db: tuple[float, float] = (6.0, 20.0)
    partition_radius_m: tuple[float, float] = (100.0, 200.0)


@dataclass(frozen=True)
class MeshConfig:
    """A mesh of ``num_nodes`` in a square of ``area_km2`` (default: sized for the density)."""

    num_nodes: int = 400
    area_km2: float | None = None
    density_per_km2: float = 250.0
    gateway_fraction: float = 0.05
    step_seconds: float = 10.0
    radio: RadioConstants = field(default_factory=RadioConstants)
    traffic: TrafficConstants = field(default_factory=TrafficConstants)
    faults: FaultRates = field(default_factory=FaultRates)

    def __post_init__(self) -> None:
        if self.num_nodes < 2:
            raise ValueError(f"num_nodes must be >= 2; got {self.num_nodes}")
        if self.area_km2 is not None and not self.area_km2 > 0:
            raise ValueError(f"area_km2 must be > 0; got {self.area_km2}")
        _positive(self, "density_per_km2", "step_seconds")
        if not 0.0 < self.gateway_fraction <= 1.0:
            raise ValueError(f"gateway_fraction must be in (0, 1]; got {self.gateway_fraction}")
        _check_radio(self.radio)
        _check_traffic(self.traffic)
        _check_faults(self.faults)

    @property
    def side_m(self) -> float:
        """Side of the square deployment area in metres."""
        area = self.num_nodes / self.density_per_km2 if self.area_km2 is None else self.area_km2
        return math.sqrt(area) * 1000.0

    @property
    def num_gateways(self) -> int:
        """Nodes with a wired backhaul: the roots of routing."""
        return max(1, round(self.gateway_fraction * self.num_nodes))


def _positive(section: object, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        if not value > 0:
            raise ValueError(f"{name} must be > 0; got {value}")


def _ordered_range(section: object, name: str, low: float = 0.0) -> None:
    lo, hi = getattr(section, name)
    if not low <= lo <= hi:
        raise ValueError(f"{name} must be a range ({low} <= low <= high); got ({lo}, {hi})")


def _check_radio(radio: RadioConstants) -> None:
    _positive(radio, "path_loss_exponent", "bandwidth_mhz", "max_rate_mbps", "loss_slope_db")
    if radio.shadowing_sigma_db < 0 or radio.fading_sigma_db < 0:
        raise ValueError("shadowing_sigma_db and fading_sigma_db must be >= 0")
    if not 0.0 < radio.spectral_efficiency <= 1.0:
        raise ValueError(f"spectral_efficiency must be in (0, 1]; got {radio.spectral_efficiency}")
    if not radio.rssi_floor_dbm < radio.sensitivity_dbm < radio.link_threshold_dbm:
        raise ValueError(
            "radio levels must satisfy rssi_floor_dbm < sensitivity_dbm < link_threshold_dbm; "
            f"got {radio.rssi_floor_dbm}, {radio.sensitivity_dbm}, {radio.link_threshold_dbm}"
        )
    if not radio.link_threshold_dbm < radio.max_rssi_dbm:
        raise ValueError(
            f"link_threshold_dbm {radio.link_threshold_dbm} must be below the strongest RSSI "
            f"{radio.max_rssi_dbm} (tx_power_dbm - reference_loss_db)"
        )


def _check_traffic(traffic: TrafficConstants) -> None:
    _positive(traffic, "mean_demand_mbps", "hop_service_ms", "route_timeout_ms", "buffer_frames")
    if traffic.backhaul_ms < 0 or traffic.backhaul_ms >= traffic.route_timeout_ms:
        raise ValueError("backhaul_ms must be in [0, route_timeout_ms)")
    if not 0.0 <= traffic.demand_persistence < 1.0:
        raise ValueError(f"demand_persistence must be in [0, 1); got {traffic.demand_persistence}")
    if not 0.0 <= traffic.surge_rate < 1.0:
        raise ValueError(f"surge_rate must be in [0, 1); got {traffic.surge_rate}")
    _ordered_range(traffic, "surge_factor", low=1.0)
    _ordered_range(traffic, "surge_steps", low=1)
    for name in ("cpu_base_range", "memory_base_range"):
        _ordered_range(traffic, name)
        if getattr(traffic, name)[1] > 100.0:
            raise ValueError(f"{name} must lie within [0, 100] percent")


def _check_faults(faults: FaultRates) -> None:
    if not 0.0 <= faults.onset_rate < 1.0:
        raise ValueError(f"onset_rate must be in [0, 1); got {faults.onset_rate}")
    if len(faults.kind_weights) != len(FAULT_KINDS) or min(faults.kind_weights) < 0:
        raise ValueError(
            f"kind_weights needs {len(FAULT_KINDS)} non-negative weights "
            f"({', '.join(k.label for k in FAULT_KINDS)}); got {faults.kind_weights}"
        )
    if faults.onset_rate > 0 and sum(faults.kind_weights) <= 0:
        raise ValueError("kind_weights must not all be zero while onset_rate > 0")
    _ordered_range(faults, "duration_steps", low=1)
    _positive(faults, "zones", "mix_concentration", "cascade_max_nodes")
    if not 0.0 <= faults.cascade_spread_probability <= 1.0:
        raise ValueError("cascade_spread_probability must be in [0, 1]")
    ranges = [f.name for f in fields(faults) if isinstance(getattr(faults, f.name), tuple)]
    for name in ranges:
        if name not in ("kind_weights", "duration_steps"):
            _ordered_range(faults, name)
