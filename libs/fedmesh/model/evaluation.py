"""Scoring snapshots and measuring detection quality: macro-F1, PR-AUC, recall per kind."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from sklearn.metrics import average_precision_score
from torch.nn import functional
from torch_geometric.data import Data

from fedmesh.model.batching import collate
from fedmesh.model.detector import AnomalyDetector
from fedmesh.model.labels import FAULT_KINDS
from fedmesh.model.severity import DEFAULT_THRESHOLD

_SCORING_SNAPSHOTS = 256


@dataclass(frozen=True)
class DetectorMetrics:
    """Quality of the detector on a set of scored nodes at one decision threshold.

    ``macro_f1`` averages the F1 of the healthy and the anomalous class; ``pr_auc`` is
    the average precision of the anomaly score (``None`` when there is no anomaly);
    ``recall_per_kind`` holds the share of labelled nodes caught, per fault kind present.
    """

    macro_f1: float
    anomaly_f1: float
    precision: float
    recall: float
    pr_auc: float | None
    recall_per_kind: dict[str, float]
    loss: float
    samples: int
    positives: int
    threshold: float


def score_snapshot(model: AnomalyDetector, graph: Data) -> torch.Tensor:
    """Anomaly scores in [0, 1] for every node of one snapshot, in one batched pass."""
    x, edge_index = graph.x, graph.edge_index
    if not isinstance(x, torch.Tensor) or not isinstance(edge_index, torch.Tensor):
        raise ValueError("the snapshot needs tensors x [num_nodes, 8] and edge_index [2, E]")
    return torch.sigmoid(_logits(model, x, edge_index))


def evaluate(
    model: AnomalyDetector, graphs: Sequence[Data], threshold: float = DEFAULT_THRESHOLD
) -> DetectorMetrics:
    """Metrics of ``model`` on the scored nodes of ``graphs``, anomalous when score ≥ threshold."""
    _check_threshold(threshold)
    logits, labels, kinds = _score_all(model, graphs)
    if labels.numel() == 0:
        raise ValueError("no scored nodes in the evaluation graphs")
    scores = torch.sigmoid(logits)
    predicted = scores >= threshold
    truth = labels.bool()
    tp = int((predicted & truth).sum())
    fp = int((predicted & ~truth).sum())
    fn = int((~predicted & truth).sum())
    tn = int((~predicted & ~truth).sum())
    positives = tp + fn
    recall_per_kind = {
        kind.label: float(predicted[kinds == kind].float().mean())
        for kind in FAULT_KINDS
        if bool((kinds == kind).any())
    }
    return DetectorMetrics(
        macro_f1=(_f1(tp, fp, fn) + _f1(tn, fn, fp)) / 2,
        anomaly_f1=_f1(tp, fp, fn),
        precision=tp / (tp + fp) if tp + fp else 0.0,
        recall=tp / positives if positives else 0.0,
        pr_auc=float(average_precision_score(truth.numpy(), scores.numpy())) if positives else None,
        recall_per_kind=recall_per_kind,
        loss=float(functional.binary_cross_entropy_with_logits(logits, labels)),
        samples=int(labels.numel()),
        positives=positives,
        threshold=threshold,
    )


def choose_threshold(model: AnomalyDetector, graphs: Sequence[Data]) -> float:
    """The score threshold that maximises macro-F1 on validation ``graphs``.

    Falls back to ``DEFAULT_THRESHOLD`` (0.6) when the graphs lack either class.
    """
    logits, labels, _ = _score_all(model, graphs)
    truth = labels.bool()
    positives = int(truth.sum())
    if positives == 0 or positives == truth.numel():
        return DEFAULT_THRESHOLD
    scores = torch.sigmoid(logits).double()
    order = torch.argsort(scores, descending=True)
    ranked_scores, ranked_truth = scores[order], truth[order].double()
    # Predicting the top k as anomalous: counts for every cut, then keep cuts at distinct scores.
    tp = torch.cumsum(ranked_truth, 0)
    fp = torch.cumsum(1.0 - ranked_truth, 0)
    fn = positives - tp
    tn = (truth.numel() - positives) - fp
    last_of_tie = torch.ones_like(ranked_truth, dtype=torch.bool)
    last_of_tie[:-1] = ranked_scores[1:] < ranked_scores[:-1]
    f1_anomaly = 2 * tp / (2 * tp + fp + fn)
    f1_healthy = torch.where(2 * tn + fn + fp > 0, 2 * tn / (2 * tn + fn + fp), 0.0)
    macro = torch.where(last_of_tie, (f1_anomaly + f1_healthy) / 2, -1.0)
    best = int(torch.argmax(macro))
    return float(ranked_scores[best])


def _score_all(
    model: AnomalyDetector, graphs: Sequence[Data]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits, labels and fault kinds of the scored nodes of all graphs."""
    if not graphs:
        raise ValueError("no graphs given; expected at least one snapshot")
    logits, labels, kinds = [], [], []
    for start in range(0, len(graphs), _SCORING_SNAPSHOTS):
        batch = collate(graphs[start : start + _SCORING_SNAPSHOTS])
        logits.append(_logits(model, batch.x, batch.edge_index)[batch.mask])
        labels.append(batch.y[batch.mask])
        kinds.append(batch.fault_kind[batch.mask])
    return torch.cat(logits), torch.cat(labels), torch.cat(kinds)


def _logits(model: AnomalyDetector, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            logits: torch.Tensor = model(x, edge_index)
            return logits
    finally:
        model.train(was_training)


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def _check_threshold(threshold: float) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1]; got {threshold!r}")
