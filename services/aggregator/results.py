"""Stored AggregateRound results: what makes a repeated call return the same answer."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis

from fedmesh.services.aggregator.update import ModelRef
from fedmesh.store import keys


@dataclass(frozen=True)
class NodeEvidence:
    """What the rule did with one node's update, and why."""

    node_id: str
    digest: str
    score: float | None
    excluded: bool
    clipped: bool
    reason: str


@dataclass(frozen=True)
class RoundResult:
    """The published model of a round and the evidence about every update in it."""

    model: ModelRef
    evidence: tuple[NodeEvidence, ...]
    updates_used: int
    mean_local_loss: float
    epsilon_spent: float
    aggregation_seconds: float

    def to_json(self) -> str:
        """The stored JSON form."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> RoundResult:
        """Parse the stored JSON form."""
        data: dict[str, Any] = json.loads(raw)
        return cls(
            model=ModelRef(**data["model"]),
            evidence=tuple(NodeEvidence(**item) for item in data["evidence"]),
            updates_used=int(data["updates_used"]),
            mean_local_loss=float(data["mean_local_loss"]),
            epsilon_spent=float(data["epsilon_spent"]),
            aggregation_seconds=float(data["aggregation_seconds"]),
        )


class RoundResults:
    """The result of each aggregated round, under ``keys.aggregate_result_key``."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def get(self, run_id: str, round_no: int) -> RoundResult | None:
        """The stored result, or None when the round was not aggregated yet."""
        raw = await self._redis.get(keys.aggregate_result_key(run_id, round_no))
        return RoundResult.from_json(str(raw)) if raw is not None else None

    async def put(self, run_id: str, round_no: int, result: RoundResult) -> RoundResult:
        """Store ``result`` unless one is stored already; return the one that stands."""
        key = keys.aggregate_result_key(run_id, round_no)
        if await self._redis.set(key, result.to_json(), nx=True):
            return result
        stored = await self.get(run_id, round_no)
        return stored if stored is not None else result
