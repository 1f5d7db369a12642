"""The node's machine learning: evaluate a received model, train it, compute the delta."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch_geometric.data import Data

from fedmesh.client.local_data import LocalData
from fedmesh.model import (
    FEATURE_NAMES,
    FEATURE_SCALES,
    AnomalyDetector,
    DetectorMetrics,
    evaluate,
    score_snapshot,
    train_local,
)
from fedmesh.privacy.clipping import clip_l2
from fedmesh.tensors import decode, flatten, manifest_of, unflatten


@dataclass(frozen=True)
class LocalUpdate:
    """The result of local training: the delta to upload and what it was trained on."""

    delta: dict[str, torch.Tensor]
    mean_loss: float
    samples: int
    clipped_from_norm: float | None


@dataclass(frozen=True)
class Suspect:
    """A mesh node the detector scores as anomalous in one snapshot."""

    mesh_node: int
    score: float
    telemetry: dict[str, float]


def raw_telemetry(normalised: torch.Tensor) -> dict[str, float]:
    """Undo the detector's fixed normalisation of one node's features (units of the docs)."""
    values: dict[str, float] = {}
    for name, scale, x in zip(FEATURE_NAMES, FEATURE_SCALES, normalised.tolist(), strict=True):
        value = x * scale.scale + scale.offset
        values[name] = float(torch.expm1(torch.tensor(value))) if scale.log else value
    return values


def suspects(model: AnomalyDetector, graph: Data, min_score: float) -> list[Suspect]:
    """The scored nodes of a snapshot whose anomaly score is at least ``min_score``."""
    scores = score_snapshot(model, graph)
    flagged = ((scores >= min_score) & graph.mask).nonzero().flatten().tolist()
    return [
        Suspect(int(graph.node_id[i]), float(scores[i]), raw_telemetry(graph.x[i])) for i in flagged
    ]


def load_model(payload: bytes) -> AnomalyDetector:
    """A detector with the weights of a canonical safetensors payload (never unpickled)."""
    model = AnomalyDetector()
    model.load_state_dict(decode(payload), strict=True)
    return model


class LocalLearner:
    """Evaluates and trains the detector on one client's own data."""

    def __init__(self, data: LocalData, seed: int) -> None:
        self._data = data
        self._seed = seed

    def evaluate(self, payload: bytes) -> DetectorMetrics:
        """Metrics of the received model on the held-out window."""
        return evaluate(load_model(payload), self._data.held_out)

    def train(
        self, payload: bytes, epochs: int, lr: float, round_no: int, clip_norm: float | None
    ) -> LocalUpdate:
        """Train from the received weights; the delta is clipped to ``clip_norm`` when set."""
        model = load_model(payload)
        base = {k: v.detach().clone() for k, v in model.state_dict().items()}
        stats = train_local(model, self._data.train, epochs, lr, seed=self._seed * 1000 + round_no)
        trained = model.state_dict()
        delta: Mapping[str, torch.Tensor] = {
            name: (trained[name] - base[name]).to(torch.float32) for name in base
        }
        clipped_from = None
        if clip_norm is not None:
            manifest = manifest_of(delta)
            clipped = clip_l2(flatten(delta, manifest), clip_norm)
            if clipped.clipped:
                clipped_from = clipped.original_norm
            delta = unflatten(clipped.tensor, manifest)
        return LocalUpdate(dict(delta), stats.mean_loss, stats.samples, clipped_from)
