import math
from collections.abc import Callable

import pytest
import torch
from torch.nn import functional
from torch_geometric.data import Data

from fedmesh.model import (
    AnomalyDetector,
    FaultKind,
    choose_threshold,
    evaluate,
    score_snapshot,
)

Snapshot = Callable[..., Data]

CPU = [-1.0, 0.5, 2.0, 3.0]
LABELS = [False, False, True, True]
KINDS = [0, 0, int(FaultKind.CASCADE), int(FaultKind.INTERFERENCE)]


def sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


def test_scores_follow_the_crafted_weights(
    cpu_detector: AnomalyDetector, snapshot: Snapshot
) -> None:
    scores = score_snapshot(cpu_detector, snapshot(CPU, LABELS))

    expected = torch.tensor([0.5, sigmoid(0.5), sigmoid(2.0), sigmoid(3.0)])
    assert torch.allclose(scores, expected)


def test_perfect_separation(cpu_detector: AnomalyDetector, snapshot: Snapshot) -> None:
    metrics = evaluate(cpu_detector, [snapshot(CPU, LABELS, KINDS)], threshold=0.8)

    assert metrics.macro_f1 == 1.0
    assert metrics.anomaly_f1 == 1.0
    assert metrics.pr_auc == 1.0
    assert metrics.recall_per_kind == {"cascade": 1.0, "interference": 1.0}
    assert (metrics.samples, metrics.positives, metrics.threshold) == (4, 2, 0.8)


def test_counts_at_a_loose_threshold(cpu_detector: AnomalyDetector, snapshot: Snapshot) -> None:
    # Scores 0.5, 0.62, 0.88, 0.95 at threshold 0.6: one healthy node is flagged.
    metrics = evaluate(cpu_detector, [snapshot(CPU, LABELS)], threshold=0.6)

    assert metrics.precision == pytest.approx(2 / 3)
    assert metrics.recall == 1.0
    assert metrics.anomaly_f1 == pytest.approx(0.8)
    assert metrics.macro_f1 == pytest.approx((0.8 + 2 / 3) / 2)


def test_recall_per_kind_and_loss(cpu_detector: AnomalyDetector, snapshot: Snapshot) -> None:
    metrics = evaluate(cpu_detector, [snapshot(CPU, LABELS, KINDS)], threshold=0.9)

    assert metrics.recall_per_kind == {"cascade": 0.0, "interference": 1.0}
    logits = torch.tensor([0.0, 0.5, 2.0, 3.0])
    expected = functional.binary_cross_entropy_with_logits(logits, torch.tensor([0.0, 0, 1, 1]))
    assert metrics.loss == pytest.approx(float(expected))


def test_unscored_nodes_do_not_count(cpu_detector: AnomalyDetector, snapshot: Snapshot) -> None:
    graph = snapshot(CPU, LABELS, mask=[True, False, True, True])

    metrics = evaluate(cpu_detector, [graph], threshold=0.6)

    assert metrics.samples == 3
    assert metrics.macro_f1 == 1.0


def test_many_snapshots_are_pooled(cpu_detector: AnomalyDetector, snapshot: Snapshot) -> None:
    graphs = [snapshot(CPU, LABELS) for _ in range(300)]

    metrics = evaluate(cpu_detector, graphs, threshold=0.8)

    assert (metrics.samples, metrics.positives, metrics.macro_f1) == (1200, 600, 1.0)


def test_without_anomalies_pr_auc_is_undefined(
    cpu_detector: AnomalyDetector, snapshot: Snapshot
) -> None:
    metrics = evaluate(cpu_detector, [snapshot(CPU, [False] * 4)], threshold=0.99)

    assert metrics.pr_auc is None
    assert metrics.recall_per_kind == {}
    assert metrics.macro_f1 == 0.5  # healthy F1 is 1, anomaly F1 is 0


def test_threshold_is_chosen_at_the_best_cut(
    cpu_detector: AnomalyDetector, snapshot: Snapshot
) -> None:
    threshold = choose_threshold(cpu_detector, [snapshot(CPU, LABELS)])

    assert threshold == pytest.approx(sigmoid(2.0))
    assert evaluate(cpu_detector, [snapshot(CPU, LABELS)], threshold).macro_f1 == 1.0


def test_threshold_defaults_without_both_classes(
    cpu_detector: AnomalyDetector, snapshot: Snapshot
) -> None:
    assert choose_threshold(cpu_detector, [snapshot(CPU, [False] * 4)]) == 0.6
    assert choose_threshold(cpu_detector, [snapshot(CPU, [True] * 4)]) == 0.6


def test_scoring_leaves_the_training_mode_alone(snapshot: Snapshot) -> None:
    torch.manual_seed(0)
    model = AnomalyDetector().train()
    graph = snapshot(CPU, LABELS)

    first = score_snapshot(model, graph)

    assert model.training
    assert torch.equal(first, score_snapshot(model, graph))
    assert torch.equal(first, torch.sigmoid(model.eval()(graph.x, graph.edge_index)))


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan")])
def test_bad_threshold_is_refused(
    cpu_detector: AnomalyDetector, snapshot: Snapshot, threshold: float
) -> None:
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
        evaluate(cpu_detector, [snapshot(CPU, LABELS)], threshold)


def test_malformed_graphs_are_refused(cpu_detector: AnomalyDetector) -> None:
    with pytest.raises(ValueError, match="no graphs given"):
        evaluate(cpu_detector, [])
    bad = Data(
        x=torch.zeros(3, 8), edge_index=torch.zeros(2, 0, dtype=torch.long), y=torch.zeros(4)
    )
    with pytest.raises(ValueError, match=r"graph 0: y has shape \(4,\); expected \[3\]"):
        evaluate(cpu_detector, [bad])
