"""Robust aggregation rules and pre-aggregators: pure functions over torch tensors.

`aggregate` runs a `RuleSpec` over an n×m tensor, `aggregate_source` over the
coordinate blocks of an `UpdateSource` (a spool larger than memory); each rule
also has its own function. Every result carries per-update evidence.

The rule specs and errors load without torch (the coordinator checks quorums with
them); the rules themselves load torch on first use.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from fedmesh.aggregation.errors import InsufficientUpdatesError, InvalidUpdatesError
from fedmesh.aggregation.spec import Rule, RuleSpec, min_participants

if TYPE_CHECKING:
    from fedmesh.aggregation.bucketing import BucketedSource, Buckets, bucketing
    from fedmesh.aggregation.bulyan import bulyan
    from fedmesh.aggregation.centered_clipping import centered_clipping
    from fedmesh.aggregation.coordinatewise import coordinate_median, trimmed_mean
    from fedmesh.aggregation.engine import aggregate, aggregate_source
    from fedmesh.aggregation.fedavg import StreamingMean, fedavg
    from fedmesh.aggregation.geometric_median import geometric_median
    from fedmesh.aggregation.krum import krum, multi_krum
    from fedmesh.aggregation.norm_bounding import norm_bounding
    from fedmesh.aggregation.result import AggregationResult, UpdateEvidence
    from fedmesh.aggregation.source import TensorSource, UpdateSource, default_block_size

_LAZY = {
    "AggregationResult": "result",
    "BucketedSource": "bucketing",
    "Buckets": "bucketing",
    "StreamingMean": "fedavg",
    "TensorSource": "source",
    "UpdateEvidence": "result",
    "UpdateSource": "source",
    "aggregate": "engine",
    "aggregate_source": "engine",
    "bucketing": "bucketing",
    "bulyan": "bulyan",
    "centered_clipping": "centered_clipping",
    "coordinate_median": "coordinatewise",
    "default_block_size": "source",
    "fedavg": "fedavg",
    "geometric_median": "geometric_median",
    "krum": "krum",
    "multi_krum": "krum",
    "norm_bounding": "norm_bounding",
    "trimmed_mean": "coordinatewise",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"fedmesh.aggregation.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'fedmesh.aggregation' has no attribute {name!r}")


class _RulesPackage(types.ModuleType):
    """Keeps ``krum`` the function when the submodule ``krum`` loads.

    Importing a submodule binds it on its package under its own name; several rules
    share their module's name, and the package's name must stay the rule.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _RulesPackage


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
