"""What the coordinator needs from the other services, as the domain sees it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from fedmesh.services.coordinator.runs import ModelRef
from fedmesh.services.coordinator.spec import RunSpec


@dataclass(frozen=True)
class Verdict:
    """The aggregator's evidence about one node's update."""

    node_id: str
    excluded: bool
    reason: str
    score: float | None = None


@dataclass(frozen=True)
class AggregateOutcome:
    """A round's result as the aggregator reports it."""

    model: ModelRef
    verdicts: Sequence[Verdict]
    mean_local_loss: float
    epsilon_spent: float


@dataclass(frozen=True)
class Evaluation:
    """Metrics of a model version, combined over the nodes that reported."""

    loss: float
    macro_f1: float
    pr_auc: float
    samples: int
    reporters: int


class Aggregation(Protocol):
    """The aggregator service."""

    async def aggregate_round(
        self,
        run_id: str,
        round_no: int,
        fencing_token: int,
        spec: RunSpec,
        base_model: ModelRef,
        trace_carrier: Mapping[str, str],
    ) -> AggregateOutcome:
        """Aggregate a round (idempotent by run and round)."""
        ...


class ModelCatalog(Protocol):
    """The model registry."""

    async def latest(self, name: str) -> ModelRef | None:
        """The newest version of ``name``, or None when there is none."""
        ...

    async def record_evaluation(self, model: ModelRef, evaluation: Evaluation) -> None:
        """Store combined evaluation metrics on a version."""
        ...


class Events(Protocol):
    """The alerting service, best effort."""

    async def emit(
        self,
        kind: str,
        labels: Mapping[str, str],
        annotations: Mapping[str, str] | None = None,
        resolve: bool = False,
    ) -> None:
        """Send an event; never raises."""
        ...
