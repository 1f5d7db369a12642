"""Disjoint union of snapshot graphs, so one forward pass scores many snapshots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch_geometric.data import Data

from fedmesh.model.features import NUM_FEATURES
from fedmesh.model.labels import FaultKind


@dataclass(frozen=True)
class SnapshotBatch:
    """Several snapshots as one graph; only nodes with ``mask`` set are scored."""

    x: torch.Tensor
    edge_index: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor
    fault_kind: torch.Tensor

    @property
    def scored(self) -> int:
        """Number of nodes that count towards loss and metrics."""
        return int(self.mask.sum())


def collate(graphs: Sequence[Data]) -> SnapshotBatch:
    """Join graphs carrying ``x [N, 8]``, ``edge_index`` and ``y [N]`` (optional ``mask``,
    ``fault_kind``) into one batch; raises ``ValueError`` naming the first bad graph."""
    if not graphs:
        raise ValueError("no graphs given; expected at least one snapshot")
    xs, edges, ys, masks, kinds = [], [], [], [], []
    offset = 0
    for position, graph in enumerate(graphs):
        x, edge_index, y = graph.x, graph.edge_index, graph.y
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != NUM_FEATURES:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else None
            raise ValueError(
                f"graph {position}: x has shape {shape}; expected [num_nodes, {NUM_FEATURES}]"
            )
        count = x.shape[0]
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != (count,):
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else None
            raise ValueError(f"graph {position}: y has shape {shape}; expected [{count}]")
        if (
            not isinstance(edge_index, torch.Tensor)
            or edge_index.ndim != 2
            or (edge_index.shape[0] != 2)
        ):
            raise ValueError(f"graph {position}: edge_index must be a [2, num_edges] tensor")
        mask = graph.get("mask")
        kind = graph.get("fault_kind")
        xs.append(x)
        edges.append(edge_index + offset)
        ys.append(y.to(torch.float32))
        masks.append(mask if mask is not None else torch.ones(count, dtype=torch.bool))
        kinds.append(
            kind
            if kind is not None
            else torch.where(y.bool(), -1, int(FaultKind.NONE)).to(torch.long)
        )
        offset += count
    return SnapshotBatch(
        x=torch.cat(xs),
        edge_index=torch.cat(edges, dim=1),
        y=torch.cat(ys),
        mask=torch.cat(masks),
        fault_kind=torch.cat(kinds),
    )
