"""What one federated client holds: its region's telemetry graphs, split in time."""

from __future__ import annotations

from dataclasses import dataclass

from torch_geometric.data import Data

from fedmesh.mesh import (
    MeshConfig,
    Region,
    TelemetrySeries,
    simulate,
    snapshot_graphs,
    split_regions,
    split_windows,
)


@dataclass(frozen=True)
class LocalData:
    """A client's snapshot graphs: training, validation and held-out test windows."""

    region: str
    train: list[Data]
    validation: list[Data]
    held_out: list[Data]

    @property
    def samples(self) -> int:
        """Scored node-steps in the training window (the FedAvg weight)."""
        return sum(int(g.mask.sum()) for g in self.train)


def region_data(series: TelemetrySeries, region: Region) -> LocalData:
    """Graphs of one region over the standard train / validation / test windows."""
    windows = split_windows(series.num_steps)
    return LocalData(
        region=f"region-{region.index}",
        train=snapshot_graphs(series, region, windows.train),
        validation=snapshot_graphs(series, region, windows.validation),
        held_out=snapshot_graphs(series, region, windows.test),
    )


def simulated_clients(
    config: MeshConfig, num_clients: int, steps: int, seed: int
) -> tuple[TelemetrySeries, list[LocalData]]:
    """Simulate a mesh and give each of ``num_clients`` clients one region of it (non-IID)."""
    series = simulate(config, steps, seed)
    regions = split_regions(series, num_clients, seed)
    return series, [region_data(series, region) for region in regions]
