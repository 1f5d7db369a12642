"""Tasks pending for nodes, in Redis, so a node that reconnects gets its task again."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis

from fedmesh.services.coordinator.runs import ModelRef
from fedmesh.services.coordinator.spec import (
    PrivacySettings,
    SecureAggregationSettings,
    TrainingSettings,
)
from fedmesh.store import keys


class TaskKind(StrEnum):
    """What a node is asked to do."""

    TRAIN = "TRAIN"
    EVALUATE = "EVALUATE"


@dataclass(frozen=True)
class Task:
    """A unit of work for one node."""

    task_id: str
    kind: TaskKind
    run_id: str
    round_no: int
    model: ModelRef
    aggregator_address: str
    deadline_unix_ms: int
    training: TrainingSettings
    privacy: PrivacySettings
    secure_aggregation: SecureAggregationSettings
    trace_carrier: Mapping[str, str] = field(default_factory=dict)
    peer_signing_keys: Mapping[str, str] = field(default_factory=dict)
    """Secure rounds: every participant's Ed25519 public key (hex), by node id."""

    def to_json(self) -> str:
        """JSON form stored in Redis."""
        data = asdict(self)
        data["model"] = json.loads(self.model.to_json())
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> Task:
        """Parse the stored JSON form."""
        data: dict[str, Any] = json.loads(raw)
        return cls(
            task_id=data["task_id"],
            kind=TaskKind(data["kind"]),
            run_id=data["run_id"],
            round_no=int(data["round_no"]),
            model=ModelRef(**data["model"]),
            aggregator_address=data["aggregator_address"],
            deadline_unix_ms=int(data["deadline_unix_ms"]),
            training=TrainingSettings(**data["training"]),
            privacy=PrivacySettings(**data["privacy"]),
            secure_aggregation=SecureAggregationSettings(**data["secure_aggregation"]),
            trace_carrier=dict(data["trace_carrier"]),
            peer_signing_keys=dict(data.get("peer_signing_keys", {})),
        )


class TaskBoard:
    """One pending task per node; replaced by the next one, cleared when its round closes."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._on_assign: list[Callable[[], None]] = []

    def on_assign(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after every assignment (a feed in this process pushes at once)."""
        self._on_assign.append(callback)

    async def assign(self, node_ids: Iterable[str], task_for: Mapping[str, Task]) -> None:
        """Store each node's task (one transaction)."""
        pipe = self._redis.pipeline(transaction=True)
        for node_id in node_ids:
            pipe.set(keys.node_task_key(node_id), task_for[node_id].to_json())
        await pipe.execute()
        for callback in self._on_assign:
            callback()

    async def pending(self, node_id: str) -> Task | None:
        """The task waiting for ``node_id``, if any."""
        raw = await self._redis.get(keys.node_task_key(node_id))
        return Task.from_json(str(raw)) if raw else None

    async def pending_many(self, node_ids: Sequence[str]) -> dict[str, Task | None]:
        """The task waiting for each of ``node_ids`` (one round trip)."""
        if not node_ids:
            return {}
        raws = await self._redis.mget([keys.node_task_key(n) for n in node_ids])
        return {
            node_id: Task.from_json(str(raw)) if raw else None
            for node_id, raw in zip(node_ids, raws, strict=True)
        }

    async def clear(self, node_ids: Iterable[str], run_id: str, round_no: int) -> None:
        """Remove the tasks of a closed round (a newer task is left alone)."""
        for node_id in node_ids:
            task = await self.pending(node_id)
            if task is not None and task.run_id == run_id and task.round_no == round_no:
                await self._redis.delete(keys.node_task_key(node_id))
