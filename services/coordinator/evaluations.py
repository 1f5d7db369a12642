"""Federated evaluation: nodes' metrics of a version, combined weighted by sample count."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import redis.asyncio as aioredis

from fedmesh.errors import InvalidArgument
from fedmesh.services.coordinator.ports import Evaluation
from fedmesh.store import keys


@dataclass(frozen=True)
class NodeEvaluation:
    """One node's metrics of a version on its own held-out telemetry."""

    loss: float
    macro_f1: float
    pr_auc: float
    samples: int

    def validate(self) -> NodeEvaluation:
        """Refuse non-finite or out-of-range metrics."""
        for name in ("loss", "macro_f1", "pr_auc"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise InvalidArgument(f"evaluation {name} is {value}; expected a finite number")
        for name in ("macro_f1", "pr_auc"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidArgument(f"evaluation {name} is {value}; expected a value in [0, 1]")
        if self.samples < 1:
            raise InvalidArgument(f"evaluation covers {self.samples} samples; expected at least 1")
        return self


def combine(reports: list[NodeEvaluation]) -> Evaluation:
    """Sample-weighted means of the nodes' metrics."""
    total = sum(r.samples for r in reports)
    return Evaluation(
        loss=sum(r.loss * r.samples for r in reports) / total,
        macro_f1=sum(r.macro_f1 * r.samples for r in reports) / total,
        pr_auc=sum(r.pr_auc * r.samples for r in reports) / total,
        samples=total,
        reporters=len(reports),
    )


class EvaluationBoard:
    """Reports per (run, version) in Redis; a node's repeated report replaces its earlier one."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def report(
        self, run_id: str, version: int, node_id: str, evaluation: NodeEvaluation
    ) -> Evaluation:
        """Store one node's report and return the combination of all reports so far."""
        key = keys.evaluations_of_version_key(run_id, version)
        await self._redis.hset(key, node_id, json.dumps(asdict(evaluation.validate())))
        return await self.combined(run_id, version)

    async def combined(self, run_id: str, version: int) -> Evaluation:
        """The combination of the reports of a version (zero reporters: all zero)."""
        rows = await self._redis.hvals(keys.evaluations_of_version_key(run_id, version))
        reports = [NodeEvaluation(**json.loads(row)) for row in rows]
        if not reports:
            return Evaluation(0.0, 0.0, 0.0, 0, 0)
        return combine(reports)
