"""GraphSAGE anomaly detector: architecture, features, training, evaluation, storage."""

from fedmesh.model.detector import AnomalyDetector
from fedmesh.model.evaluation import DetectorMetrics, choose_threshold, evaluate, score_snapshot
from fedmesh.model.features import FEATURE_NAMES, FEATURE_SCALES, NUM_FEATURES, normalise
from fedmesh.model.labels import FAULT_KINDS, FaultKind
from fedmesh.model.persistence import load_detector, save_detector
from fedmesh.model.severity import DEFAULT_THRESHOLD, Severity, severity
from fedmesh.model.training import TrainStats, train_local

__all__ = [
    "DEFAULT_THRESHOLD",
    "FAULT_KINDS",
    "FEATURE_NAMES",
    "FEATURE_SCALES",
    "NUM_FEATURES",
    "AnomalyDetector",
    "DetectorMetrics",
    "FaultKind",
    "Severity",
    "TrainStats",
    "choose_threshold",
    "evaluate",
    "load_detector",
    "normalise",
    "save_detector",
    "score_snapshot",
    "severity",
    "train_local",
]
