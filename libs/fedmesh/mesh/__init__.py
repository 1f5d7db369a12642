"""Mesh telemetry simulator: topology, radio and traffic physics, faults with ground truth,
the federated split into regions, and snapshot graphs for the detector."""

from fedmesh.mesh.config import FaultRates, MeshConfig, RadioConstants, TrafficConstants
from fedmesh.mesh.faults import FaultRecord
from fedmesh.mesh.graphs import snapshot_graphs
from fedmesh.mesh.ranges import feature_ranges
from fedmesh.mesh.regions import Region, split_regions
from fedmesh.mesh.series import TelemetrySeries
from fedmesh.mesh.simulator import simulate
from fedmesh.mesh.topology import Mesh, build_mesh
from fedmesh.mesh.windows import TimeWindows, split_windows
from fedmesh.model.labels import FAULT_KINDS, FaultKind

__all__ = [
    "FAULT_KINDS",
    "FaultKind",
    "FaultRates",
    "FaultRecord",
    "Mesh",
    "MeshConfig",
    "RadioConstants",
    "Region",
    "TelemetrySeries",
    "TimeWindows",
    "TrafficConstants",
    "build_mesh",
    "feature_ranges",
    "simulate",
    "snapshot_graphs",
    "split_regions",
    "split_windows",
]
