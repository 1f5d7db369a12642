"""The GraphSAGE anomaly detector of DESIGN.md §4."""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import SAGEConv

from fedmesh.model.features import NUM_FEATURES

HIDDEN = 64
GATE_HIDDEN = 32
HEAD_HIDDEN = 32
DROPOUT = 0.3


class AnomalyDetector(nn.Module):
    """Scores every node of a mesh snapshot; ``forward`` returns one logit per node.

    SAGEConv 8→64 → ReLU → dropout 0.3 → SAGEConv 64→64 → ReLU; an attention gate
    (64→32 → ReLU → 1, sigmoid) multiplied into the embedding; head 64→32 → ReLU → 1.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = SAGEConv(NUM_FEATURES, HIDDEN)
        self.dropout = nn.Dropout(DROPOUT)
        self.conv2 = SAGEConv(HIDDEN, HIDDEN)
        self.gate = nn.Sequential(
            nn.Linear(HIDDEN, GATE_HIDDEN), nn.ReLU(), nn.Linear(GATE_HIDDEN, 1), nn.Sigmoid()
        )
        self.head = nn.Sequential(
            nn.Linear(HIDDEN, HEAD_HIDDEN), nn.ReLU(), nn.Linear(HEAD_HIDDEN, 1)
        )

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Logits ``[N]`` for normalised features ``x [N, 8]`` and ``edge_index [2, E]``."""
        if x.ndim != 2 or x.shape[1] != NUM_FEATURES:
            raise ValueError(f"x has shape {tuple(x.shape)}; expected [num_nodes, {NUM_FEATURES}]")
        if edge_index.ndim != 2 or edge_index.shape[0] != 2:
            raise ValueError(
                f"edge_index has shape {tuple(edge_index.shape)}; expected [2, num_edges]"
            )
        hidden = self.dropout(torch.relu(self.conv1(x, edge_index)))
        embedding = torch.relu(self.conv2(hidden, edge_index))
        gated = embedding * self.gate(embedding)
        logits: torch.Tensor = self.head(gated).squeeze(-1)
        return logits
