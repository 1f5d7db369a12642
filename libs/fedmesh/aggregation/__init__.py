"""Robust aggregation rules and pre-aggregators: pure functions over torch tensors.

`aggregate` runs a `RuleSpec` over an n×m tensor, `aggregate_source` over the
coordinate blocks of an `UpdateSource` (a spool larger than memory); each rule
also has its own function. Every result carries per-update evidence.
"""

from fedmesh.aggregation.bucketing import BucketedSource, Buckets, bucketing
from fedmesh.aggregation.bulyan import bulyan
from fedmesh.aggregation.centered_clipping import centered_clipping
from fedmesh.aggregation.coordinatewise import coordinate_median, trimmed_mean
from fedmesh.aggregation.engine import aggregate, aggregate_source
from fedmesh.aggregation.errors import InsufficientUpdatesError, InvalidUpdatesError
from fedmesh.aggregation.fedavg import StreamingMean, fedavg
from fedmesh.aggregation.geometric_median import geometric_median
from fedmesh.aggregation.krum import krum, multi_krum
from fedmesh.aggregation.norm_bounding import norm_bounding
from fedmesh.aggregation.result import AggregationResult, UpdateEvidence
from fedmesh.aggregation.source import TensorSource, UpdateSource, default_block_size
from fedmesh.aggregation.spec import Rule, RuleSpec, min_participants

__all__ = [
    "AggregationResult",
    "BucketedSource",
    "Buckets",
    "InsufficientUpdatesError",
    "InvalidUpdatesError",
    "Rule",
    "RuleSpec",
    "StreamingMean",
    "TensorSource",
    "UpdateEvidence",
    "UpdateSource",
    "aggregate",
    "aggregate_source",
    "bucketing",
    "bulyan",
    "centered_clipping",
    "coordinate_median",
    "default_block_size",
    "fedavg",
    "geometric_median",
    "krum",
    "min_participants",
    "multi_krum",
    "norm_bounding",
    "trimmed_mean",
]
