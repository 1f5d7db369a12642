"""Fault scenarios with ground truth: onset, spread, physical effects and labelled nodes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from fedmesh.mesh.config import FaultRates
from fedmesh.model.labels import FAULT_KINDS, FaultKind

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]
Bools = NDArray[np.bool_]


@dataclass(frozen=True)
class FaultRecord:
    """One injected fault instance: what, when (steps ``start`` to ``end``, exclusive; the
    end may lie beyond the series), where it began, and every node it affected. A node
    affected by two faults at once is labelled with the earlier one."""

    id: int
    kind: FaultKind
    start: int
    end: int
    origin: int
    nodes: tuple[int, ...]


@dataclass
class NodeEffects:
    """What the active faults do to the physics at one step."""

    attenuation_db: Floats
    extra_noise_db: Floats
    demand_factor: Floats
    cpu_add: Floats
    memory_add: Floats
    loss_add: Floats
    cut: Bools

    @classmethod
    def none(cls, num_nodes: int, num_links: int) -> NodeEffects:
        """No fault active."""
        zeros = np.zeros(num_nodes)
        return cls(
            attenuation_db=zeros.copy(),
            extra_noise_db=zeros.copy(),
            demand_factor=np.ones(num_nodes),
            cpu_add=zeros.copy(),
            memory_add=zeros.copy(),
            loss_add=zeros.copy(),
            cut=np.zeros(num_links, dtype=bool),
        )


@dataclass
class _ActiveFault:
    id: int
    kind: FaultKind
    start: int
    end: int
    origin: int
    nodes: Ints
    """Labelled nodes; for a cascade, those infected so far."""
    infected_at: Ints = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    strength: Floats = field(default_factory=lambda: np.zeros(0))
    cut_links: Ints = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    node_scale: Floats = field(default_factory=lambda: np.zeros(0))


class FaultInjector:
    """Starts, spreads, applies and ends faults step by step; records every instance."""

    def __init__(
        self,
        rates: FaultRates,
        propensity: Floats,
        positions: Floats,
        links: Ints,
        gateways: Bools,
        rng: np.random.Generator,
    ) -> None:
        """``propensity[i, k]``: onset probability per step of kind ``FAULT_KINDS[k]`` at node i."""
        self._rates = rates
        self._propensity = propensity
        self._positions = positions
        self._links = links
        self._gateways = gateways
        self._rng = rng
        self._active: list[_ActiveFault] = []
        self._finished: list[FaultRecord] = []
        self._next_id = 0

    def advance(self, step: int, owner: Ints, previous_active: Bools) -> None:
        """End faults due at ``step``, spread cascades over the links live at the previous
        step, and start new faults at nodes not labelled by another fault (``owner == -1``)."""
        for fault in [f for f in self._active if f.end <= step]:
            self._active.remove(fault)
            self._finished.append(_record(fault))
        owner = owner.copy()
        for fault in self._active:
            if fault.kind is FaultKind.CASCADE:
                # Claim at once, so that no other cascade takes the same node this step.
                owner[self._spread(fault, step, owner, previous_active)] = fault.id
        for column, kind in enumerate(FAULT_KINDS):
            expected = float((self._propensity[:, column] * (owner < 0)).sum())
            for _ in range(int(self._rng.poisson(expected)) if expected > 0 else 0):
                # Recomputed per fault: a node taken this step cannot be another's origin.
                weights = self._propensity[:, column] * (owner < 0)
                total = float(weights.sum())
                if total <= 0:
                    break
                origin = int(self._rng.choice(weights.size, p=weights / total))
                fault = self._start(kind, origin, step)
                free = fault.nodes[owner[fault.nodes] < 0]
                owner[free] = fault.id

    def effects(self, step: int, num_nodes: int) -> NodeEffects:
        """The combined physical effect of every active fault at ``step``."""
        effects = NodeEffects.none(num_nodes, len(self._links))
        for fault in self._active:
            _apply(fault, step, effects)
        return effects

    def owners(self, num_nodes: int) -> Ints:
        """Id of the fault labelling each node (-1 if none); the earliest fault wins."""
        owner = np.full(num_nodes, -1, dtype=np.int64)
        for fault in self._active:
            free = fault.nodes[owner[fault.nodes] < 0]
            owner[free] = fault.id
        return owner

    def records(self) -> tuple[FaultRecord, ...]:
        """Every fault started so far, ordered by id (active ones with their nodes so far)."""
        every = self._finished + [_record(f) for f in self._active]
        return tuple(sorted(every, key=lambda r: r.id))

    def _start(self, kind: FaultKind, origin: int, step: int) -> _ActiveFault:
        rates, rng = self._rates, self._rng
        low, high = rates.duration_steps
        fault = _ActiveFault(
            id=self._next_id,
            kind=kind,
            start=step,
            end=step + int(rng.integers(low, high + 1)),
            origin=origin,
            nodes=np.array([origin], dtype=np.int64),
        )
        self._next_id += 1
        if kind is FaultKind.LINK_DEGRADATION:
            fault.strength = np.array([rng.uniform(*rates.degradation_db)])
        elif kind is FaultKind.OVERLOAD:
            fault.strength = np.array(
                [
                    rng.uniform(*rates.overload_demand_factor),
                    rng.uniform(*rates.overload_cpu),
                    rng.uniform(*rates.overload_memory),
                ]
            )
        elif kind is FaultKind.CASCADE:
            fault.infected_at = np.array([step], dtype=np.int64)
            fault.strength = np.array(
                [
                    rng.uniform(*rates.cascade_cpu),
                    rng.uniform(*rates.cascade_memory),
                    rng.uniform(*rates.cascade_loss),
                ]
            )
        elif kind is FaultKind.INTERFERENCE:
            radius = rng.uniform(*rates.interference_radius_m)
            distance = self._distance_from(origin)
            fault.nodes = np.flatnonzero(distance <= radius)
            # Strongest at the source, half as strong at the edge of the region.
            fault.node_scale = 1.0 - 0.5 * distance[fault.nodes] / radius
            fault.strength = np.array([rng.uniform(*rates.interference_db)])
        else:
            self._start_partition(fault)
        self._active.append(fault)
        return fault

    def _start_partition(self, fault: _ActiveFault) -> None:
        distance = self._distance_from(fault.origin)
        radius = self._rng.uniform(*self._rates.partition_radius_m)
        # The cut-off region holds no gateway, so its nodes lose every route out.
        if self._gateways.any():
            radius = min(radius, 0.9 * float(distance[self._gateways].min()))
        inside = distance <= radius
        inside[fault.origin] = True
        a, b = self._links[:, 0], self._links[:, 1]
        fault.cut_links = np.flatnonzero(inside[a] != inside[b])
        fault.nodes = np.flatnonzero(inside)

    def _spread(self, fault: _ActiveFault, step: int, owner: Ints, live: Bools) -> Ints:
        """Infect healthy neighbours over live links; returns the newly infected nodes."""
        room = self._rates.cascade_max_nodes - fault.nodes.size
        if room <= 0:
            return np.zeros(0, dtype=np.int64)
        infected = np.zeros(owner.size, dtype=bool)
        infected[fault.nodes] = True
        a, b = self._links[:, 0], self._links[:, 1]
        exposed = live & (infected[a] != infected[b])
        targets = np.where(infected[a[exposed]], b[exposed], a[exposed])
        caught = self._rng.random(targets.size) < self._rates.cascade_spread_probability
        candidates: Ints = np.unique(targets[caught])
        fresh = candidates[owner[candidates] < 0][:room]
        fault.nodes = np.concatenate([fault.nodes, fresh])
        fault.infected_at = np.concatenate(
            [fault.infected_at, np.full(fresh.size, step, dtype=np.int64)]
        )
        return fresh

    def _distance_from(self, node: int) -> Floats:
        distance: Floats = np.linalg.norm(self._positions - self._positions[node], axis=1)
        return distance


def _apply(fault: _ActiveFault, step: int, effects: NodeEffects) -> None:
    nodes, strength = fault.nodes, fault.strength
    if fault.kind is FaultKind.LINK_DEGRADATION:
        effects.attenuation_db[nodes] += strength[0]
    elif fault.kind is FaultKind.OVERLOAD:
        effects.demand_factor[nodes] *= strength[0]
        effects.cpu_add[nodes] += strength[1]
        effects.memory_add[nodes] += strength[2]
    elif fault.kind is FaultKind.CASCADE:
        # Symptoms build up over three steps after a node is infected.
        ramp = np.minimum(1.0, (step - fault.infected_at + 1) / 3.0)
        effects.cpu_add[nodes] += strength[0] * ramp
        effects.memory_add[nodes] += strength[1] * ramp
        effects.loss_add[nodes] += strength[2] * ramp
        effects.demand_factor[nodes] *= 1.0 + 2.0 * ramp
    elif fault.kind is FaultKind.INTERFERENCE:
        effects.extra_noise_db[nodes] += strength[0] * fault.node_scale
    else:
        effects.cut[fault.cut_links] = True


def _record(fault: _ActiveFault) -> FaultRecord:
    return FaultRecord(
        id=fault.id,
        kind=fault.kind,
        start=fault.start,
        end=fault.end,
        origin=fault.origin,
        nodes=tuple(int(n) for n in fault.nodes),
    )
