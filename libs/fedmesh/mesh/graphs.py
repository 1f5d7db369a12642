"""Snapshot graphs for the detector: one PyG ``Data`` per step of a region and window."""

from __future__ import annotations

import torch
from torch_geometric.data import Data

from fedmesh.mesh.regions import Region
from fedmesh.mesh.series import TelemetrySeries
from fedmesh.model.features import normalise


def snapshot_graphs(series: TelemetrySeries, region: Region | None, window: range) -> list[Data]:
    """The region's snapshots over ``window`` (the whole mesh when ``region`` is None).

    Each graph has ``x`` (normalised features ``[n, 8]``), ``edge_index`` (live links
    inside the region, both directions, local ids), ``y`` (float labels), ``fault_kind``,
    ``mask`` (False for nodes labelled by a fault that began before the window: those
    instances were seen earlier and are not scored again), ``node_id`` (global ids) and
    ``step``.
    """
    if window.step != 1 or not 0 <= window.start < window.stop <= series.num_steps:
        raise ValueError(
            f"window {window} must be a non-empty contiguous range within 0..{series.num_steps}"
        )
    mesh = series.mesh
    nodes = torch.arange(mesh.num_nodes) if region is None else region.nodes
    local = torch.full((mesh.num_nodes,), -1, dtype=torch.long)
    local[nodes] = torch.arange(nodes.numel())
    ends = local[mesh.links]
    inside = (ends >= 0).all(dim=1)
    link_ids, region_links = inside.nonzero().squeeze(1), ends[inside]

    steps = slice(window.start, window.stop)
    x = normalise(series.features[steps][:, nodes])
    kinds = series.fault_kind[steps][:, nodes]
    instances = series.fault_instance[steps][:, nodes]
    started = torch.tensor([-1] + [f.start for f in series.faults], dtype=torch.long)
    seen_before = started[instances + 1] < window.start
    scored = (instances < 0) | ~seen_before
    graphs = []
    for offset, step in enumerate(window):
        live = region_links[series.link_active[step, link_ids]]
        graphs.append(
            Data(
                x=x[offset],
                edge_index=torch.cat([live.T, live.flip(1).T], dim=1),
                y=(kinds[offset] != 0).to(torch.float32),
                fault_kind=kinds[offset],
                mask=scored[offset],
                node_id=nodes,
                step=step,
            )
        )
    return graphs
