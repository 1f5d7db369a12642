"""Runs in Redis: spec, status, current round and the latest model."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from enum import StrEnum

import redis.asyncio as aioredis

from fedmesh.errors import NotFound
from fedmesh.services.coordinator.spec import RunSpec
from fedmesh.store import keys

# KEYS[1] run hash. ARGV: expected status, new status, reason. Only a RUNNING run moves.
_FINISH = """
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'failure_reason', ARGV[3])
return 1
"""

# KEYS[1] run hash. ARGV: round, counter field, model json ('' when the round made none).
# Applies a closed round to the run once: a leader that died half-way through
# closing leaves it to its successor, which must not count the round twice.
_SETTLE = """
local settled = tonumber(redis.call('HGET', KEYS[1], 'settled_round') or '0')
if settled >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'settled_round', ARGV[1])
redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'model', ARGV[3]) end
return 1
"""


class RunStatus(StrEnum):
    """Where a run stands."""

    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"


@dataclass(frozen=True)
class ModelRef:
    """A model version: name, version, digest."""

    name: str
    version: int
    digest: str

    def to_json(self) -> str:
        """JSON form stored in Redis and in round records."""
        return json.dumps({"name": self.name, "version": self.version, "digest": self.digest})

    @classmethod
    def from_json(cls, raw: str) -> ModelRef:
        """Parse the stored JSON form."""
        data = json.loads(raw)
        return cls(str(data["name"]), int(data["version"]), str(data["digest"]))


@dataclass(frozen=True)
class Run:
    """A run as stored."""

    run_id: str
    spec: RunSpec
    status: RunStatus
    current_round: int
    model: ModelRef
    rounds_completed: int
    rounds_failed: int
    failure_reason: str
    started_unix_ms: int


class RunStore:
    """Runs in Redis, one hash each, indexed by start time."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._finish = redis.register_script(_FINISH)
        self._finished: set[str] = set()
        self._settle = redis.register_script(_SETTLE)

    async def create(self, spec: RunSpec, model: ModelRef, now_unix_ms: int) -> Run:
        """Store a new RUNNING run starting from ``model``."""
        run_id = f"run-{uuid.uuid4().hex[:12]}"
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(
            keys.run_key(run_id),
            mapping={
                "spec": spec.to_json(),
                "status": RunStatus.RUNNING.value,
                "current_round": "0",
                "model": model.to_json(),
                "rounds_completed": "0",
                "rounds_failed": "0",
                "failure_reason": "",
                "started_unix_ms": str(now_unix_ms),
            },
        )
        pipe.zadd(keys.runs_index_key(), {run_id: now_unix_ms})
        await pipe.execute()
        return await self.get(run_id)

    async def get(self, run_id: str) -> Run:
        """One run; NotFound when unknown."""
        raw = {str(k): str(v) for k, v in (await self._redis.hgetall(keys.run_key(run_id))).items()}
        if not raw:
            raise NotFound(f"run {run_id!r} does not exist")
        return Run(
            run_id=run_id,
            spec=RunSpec.from_json(raw["spec"]),
            status=RunStatus(raw["status"]),
            current_round=int(raw["current_round"]),
            model=ModelRef.from_json(raw["model"]),
            rounds_completed=int(raw["rounds_completed"]),
            rounds_failed=int(raw["rounds_failed"]),
            failure_reason=raw["failure_reason"],
            started_unix_ms=int(raw["started_unix_ms"]),
        )

    async def newest(self, offset: int = 0, limit: int = 100) -> list[Run]:
        """Runs, newest first."""
        ids = await self._redis.zrevrange(keys.runs_index_key(), offset, offset + limit - 1)
        return [await self.get(str(run_id)) for run_id in ids]

    async def active(self) -> list[Run]:
        """Runs still RUNNING (a run seen finished is not read again: it never runs again)."""
        ids = [str(i) for i in await self._redis.zrange(keys.runs_index_key(), 0, -1)]
        runs = [await self.get(run_id) for run_id in ids if run_id not in self._finished]
        self._finished.update(run.run_id for run in runs if run.status is not RunStatus.RUNNING)
        return [run for run in runs if run.status is RunStatus.RUNNING]

    async def advance(self, run_id: str, round_no: int) -> None:
        """Record that ``round_no`` is the run's current round."""
        await self._redis.hset(keys.run_key(run_id), "current_round", str(round_no))

    async def round_closed(
        self, run_id: str, round_no: int, completed: bool, model: ModelRef | None
    ) -> bool:
        """Count a closed round and move to the model it made; False if already counted."""
        field = "rounds_completed" if completed else "rounds_failed"
        applied = await self._settle(
            keys=[keys.run_key(run_id)],
            args=[round_no, field, model.to_json() if model is not None else ""],
        )
        return bool(applied)

    async def finish(self, run_id: str, status: RunStatus, reason: str = "") -> bool:
        """Move a RUNNING run to a final status; False when it had finished already."""
        moved = await self._finish(
            keys=[keys.run_key(run_id)], args=[RunStatus.RUNNING.value, status.value, reason]
        )
        return bool(moved)
