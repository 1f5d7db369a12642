"""Time-stepped simulation of a mesh's telemetry: radio, routing, traffic, load and faults."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

from fedmesh.mesh.config import MeshConfig
from fedmesh.mesh.faults import FaultInjector, NodeEffects
from fedmesh.mesh.queueing import mean_queue_frames, overflow_probability
from fedmesh.mesh.radio import capacity_mbps, frame_loss
from fedmesh.mesh.routing import accumulate_from_gateways, route_to_gateways, sum_towards_gateways
from fedmesh.mesh.series import TelemetrySeries
from fedmesh.mesh.topology import Mesh, build_mesh
from fedmesh.model.features import NUM_FEATURES
from fedmesh.model.labels import FAULT_KINDS, FaultKind

Floats = NDArray[np.float64]
Bools = NDArray[np.bool_]

_MIN_CAPACITY_MBPS = 0.1
_MAX_TRANSMISSIONS = 20.0


def simulate(config: MeshConfig, steps: int, seed: int) -> TelemetrySeries:
    """Simulate ``steps`` snapshots of the mesh described by ``config``; same seed, same series.

    The topology, the dynamics and the faults draw from separate streams of ``seed``, so a
    change of fault rates leaves the mesh itself unchanged.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0; got {seed}")
    topology_seed, dynamics_seed, fault_seed = np.random.SeedSequence(seed).spawn(3)
    mesh = build_mesh(config, np.random.default_rng(topology_seed))
    fault_rng = np.random.default_rng(fault_seed)
    zone, zone_mix, propensity = _fault_landscape(config, mesh, fault_rng)
    injector = FaultInjector(
        config.faults,
        propensity,
        mesh.positions.double().numpy(),
        mesh.links.numpy(),
        mesh.gateways.numpy(),
        fault_rng,
    )
    physics = _Physics(config, mesh, np.random.default_rng(dynamics_seed))
    n, e = mesh.num_nodes, mesh.num_links
    features = np.empty((steps, n, NUM_FEATURES), dtype=np.float32)
    link_active = np.empty((steps, e), dtype=bool)
    owner = np.full((steps, n), -1, dtype=np.int64)
    previous_owner = np.full(n, -1, dtype=np.int64)
    previous_active = np.ones(e, dtype=bool)
    for step in range(steps):
        injector.advance(step, previous_owner, previous_active)
        effects = injector.effects(step, n)
        features[step], link_active[step] = physics.step(effects)
        owner[step] = injector.owners(n)
        previous_owner, previous_active = owner[step], link_active[step]
    faults = injector.records()
    kind_of = np.array([0] + [int(f.kind) for f in faults], dtype=np.int64)
    return TelemetrySeries(
        config=config,
        seed=seed,
        mesh=mesh,
        features=torch.from_numpy(features),
        link_active=torch.from_numpy(link_active),
        fault_kind=torch.from_numpy(kind_of[owner + 1]),
        fault_instance=torch.from_numpy(owner),
        faults=faults,
        zone=torch.from_numpy(zone),
        zone_mix=torch.from_numpy(zone_mix.astype(np.float32)),
    )


def _fault_landscape(
    config: MeshConfig, mesh: Mesh, rng: np.random.Generator
) -> tuple[NDArray[np.int64], Floats, Floats]:
    """Zones around random centres, each with a Dirichlet fault mix; per-node onset rates."""
    rates = config.faults
    positions = mesh.positions.double().numpy()
    centres = rng.uniform(0.0, config.side_m, size=(rates.zones, 2))
    distance = np.linalg.norm(positions[:, None, :] - centres[None, :, :], axis=2)
    zone = distance.argmin(axis=1).astype(np.int64)
    kinds = len(FAULT_KINDS)
    mix = rng.dirichlet(np.full(kinds, rates.mix_concentration), size=rates.zones)
    weights = np.asarray(rates.kind_weights, dtype=np.float64)
    share = weights / weights.sum() if weights.sum() > 0 else weights
    # A zone's mix scales each kind's share; averaged over zones the shares are kept.
    propensity = rates.onset_rate * share[None, :] * kinds * mix[zone]
    propensity[mesh.gateways.numpy(), FAULT_KINDS.index(FaultKind.PARTITION)] = 0.0
    return zone, mix, propensity


class _Physics:
    """The mesh's state between steps: link ages and demand; turns effects into telemetry."""

    def __init__(self, config: MeshConfig, mesh: Mesh, rng: np.random.Generator) -> None:
        traffic, n = config.traffic, mesh.num_nodes
        self._config = config
        self._rng = rng
        self._links = mesh.links.numpy()
        self._gateways = mesh.gateways.numpy()
        self._mean_rssi = mesh.link_mean_rssi_dbm.double().numpy()
        self._mean_demand = traffic.mean_demand_mbps * rng.lognormal(
            -0.5 * traffic.demand_spread**2, traffic.demand_spread, size=n
        )
        self._cpu_base = rng.uniform(*traffic.cpu_base_range, size=n)
        self._memory_base = rng.uniform(*traffic.memory_base_range, size=n)
        self._log_demand = np.zeros(n)
        self._age = rng.exponential(traffic.mean_initial_link_age_s, size=mesh.num_links)
        self._was_active = np.ones(mesh.num_links, dtype=bool)
        self._surge_left = np.zeros(n, dtype=np.int64)
        self._surge_factor = np.ones(n)

    def step(self, effects: NodeEffects) -> tuple[NDArray[np.float32], Bools]:
        """Advance one step under ``effects``: the node features ``[N, 8]`` and live links."""
        config, radio, traffic, rng = (
            self._config,
            self._config.radio,
            self._config.traffic,
            self._rng,
        )
        n = self._gateways.size
        a, b = self._links[:, 0], self._links[:, 1]
        fading = rng.normal(0.0, radio.fading_sigma_db, size=a.size)
        link_rssi = np.clip(
            self._mean_rssi - effects.attenuation_db[a] - effects.attenuation_db[b] + fading,
            radio.rssi_floor_dbm,
            radio.max_rssi_dbm,
        )
        active = (link_rssi >= radio.sensitivity_dbm) & ~effects.cut
        self._age = np.where(active & self._was_active, self._age + config.step_seconds, 0.0)
        self._was_active = active

        # Every live link is heard at both ends; SNR is measured at the receiving node.
        live = np.flatnonzero(active)
        receiver = np.concatenate([a[live], b[live]])
        heard = np.concatenate([link_rssi[live], link_rssi[live]])
        # Overlapping interferers never raise the floor beyond the strongest one configured.
        noise = radio.noise_floor_dbm + np.minimum(
            effects.extra_noise_db, config.faults.interference_db[1]
        )
        link_snr = heard - noise[receiver]
        links_heard = np.bincount(receiver, minlength=n)
        deaf = links_heard == 0

        def per_node(values: Floats, default: Floats | float) -> Floats:
            total = np.bincount(receiver, weights=values, minlength=n)
            mean: Floats = np.where(deaf, default, total / np.maximum(links_heard, 1))
            return mean

        rssi = per_node(heard, radio.rssi_floor_dbm)
        snr = per_node(link_snr, radio.rssi_floor_dbm - noise)
        radio_loss = per_node(frame_loss(link_snr, radio), 1.0)
        link_age = per_node(np.concatenate([self._age[live], self._age[live]]), 0.0)

        tree = route_to_gateways(n, self._links, active, self._gateways)
        reachable = tree.reachable
        self._log_demand = traffic.demand_persistence * self._log_demand + rng.normal(
            0.0, traffic.demand_noise, size=n
        )
        demand = (
            self._mean_demand * np.exp(self._log_demand) * self._surge() * effects.demand_factor
        )
        load = sum_towards_gateways(demand, tree)
        capacity = np.maximum(capacity_mbps(snr, radio), _MIN_CAPACITY_MBPS)
        utilisation = load / capacity
        queued = mean_queue_frames(utilisation, traffic.buffer_frames)
        dropped = overflow_probability(utilisation, traffic.buffer_frames)
        delivered = (1.0 - radio_loss) * (1.0 - dropped) * (1.0 - np.minimum(effects.loss_add, 1.0))
        loss = 1.0 - delivered

        transmissions = np.minimum(1.0 / np.maximum(1.0 - radio_loss, 1e-9), _MAX_TRANSMISSIONS)
        hop_ms = traffic.hop_service_ms * (1.0 + queued) * transmissions
        route_ms = accumulate_from_gateways(
            np.full(n, traffic.backhaul_ms), hop_ms, tree, combine="sum"
        )
        jitter = rng.lognormal(0.0, traffic.latency_jitter, size=n)
        measured_ms = np.nan_to_num(route_ms) * jitter
        latency = np.where(
            reachable,
            np.clip(measured_ms, traffic.backhaul_ms, traffic.route_timeout_ms),
            traffic.route_timeout_ms,
        )
        spare = capacity * (1.0 - radio_loss) * np.clip(1.0 - utilisation, 0.0, 1.0)
        bottleneck = accumulate_from_gateways(spare, spare, tree, combine="min")
        throughput = np.where(reachable, np.nan_to_num(bottleneck), 0.0)

        cpu = (
            self._cpu_base
            + traffic.cpu_per_mbps * np.minimum(load, capacity)
            + effects.cpu_add
            + rng.normal(0.0, traffic.cpu_noise, size=n)
        )
        memory = (
            self._memory_base
            + traffic.memory_per_queued_frame * queued
            + effects.memory_add
            + rng.normal(0.0, traffic.memory_noise, size=n)
        )
        features = np.stack(
            [
                rssi,
                snr,
                np.clip(loss, 0.0, 1.0),
                link_age,
                latency,
                throughput,
                np.clip(cpu, 0.0, 100.0),
                np.clip(memory, 0.0, 100.0),
            ],
            axis=1,
        ).astype(np.float32)
        return features, active

    def _surge(self) -> Floats:
        """Demand factor of benign traffic surges: normal life that a detector must not flag."""
        traffic, rng = self._config.traffic, self._rng
        self._surge_left = np.maximum(self._surge_left - 1, 0)
        starting = (self._surge_left == 0) & (
            rng.random(self._surge_left.size) < traffic.surge_rate
        )
        count = int(starting.sum())
        low, high = traffic.surge_steps
        self._surge_left[starting] = rng.integers(low, high + 1, size=count)
        self._surge_factor[starting] = rng.uniform(*traffic.surge_factor, size=count)
        factor: Floats = np.where(self._surge_left > 0, self._surge_factor, 1.0)
        return factor
