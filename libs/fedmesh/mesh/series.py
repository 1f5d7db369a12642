"""A simulated telemetry time series with its ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedmesh.mesh.config import MeshConfig
from fedmesh.mesh.faults import FaultRecord
from fedmesh.mesh.topology import Mesh


@dataclass(frozen=True)
class TelemetrySeries:
    """Snapshots of every node's telemetry, the live links and the injected faults.

    ``features`` is raw float32 ``[T, N, 8]`` in the order of ``fedmesh.model.FEATURE_NAMES``
    (rssi dBm, snr dB, loss_rate, link_age s, latency ms, throughput Mbps, cpu %, memory %).
    ``fault_kind [T, N]`` holds ``FaultKind`` codes (0 healthy) and ``fault_instance [T, N]``
    the id of the labelling fault in ``faults`` (-1 healthy).
    """

    config: MeshConfig
    seed: int
    mesh: Mesh
    features: torch.Tensor
    link_active: torch.Tensor
    """Bool ``[T, E]``: which of ``mesh.links`` carry frames at each step."""
    fault_kind: torch.Tensor
    fault_instance: torch.Tensor
    faults: tuple[FaultRecord, ...]
    zone: torch.Tensor
    """Fault zone of each node, long ``[N]``."""
    zone_mix: torch.Tensor
    """Share of each fault kind in each zone's onset rate, float32 ``[zones, 5]``."""

    @property
    def num_steps(self) -> int:
        """Number of snapshots T."""
        return int(self.features.shape[0])

    @property
    def num_nodes(self) -> int:
        """Number of nodes N."""
        return int(self.features.shape[1])

    @property
    def labels(self) -> torch.Tensor:
        """Bool ``[T, N]``: the node is affected by a fault at that step."""
        return self.fault_kind != 0

    @property
    def positions(self) -> torch.Tensor:
        """Node coordinates in metres, float32 ``[N, 2]``."""
        return self.mesh.positions

    def edge_index(self, step: int) -> torch.Tensor:
        """Live links at ``step`` as a PyG ``edge_index`` ``[2, 2 E_t]`` (both directions)."""
        if not 0 <= step < self.num_steps:
            raise ValueError(f"step {step} is outside the series (0 to {self.num_steps - 1})")
        live = self.mesh.links[self.link_active[step]]
        return torch.cat([live.T, live.flip(1).T], dim=1)
