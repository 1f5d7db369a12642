"""Round state in Redis: phase-guarded, atomic transitions (DESIGN §4 "Coordinator").

PENDING → COLLECTING → AGGREGATING → COMPLETED | FAILED. Every change runs as one
Lua script that first checks the phase it expects; a caller that lost the race
gets :class:`~fedmesh.errors.Aborted` and nothing changes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from fedmesh.errors import Aborted, AlreadyExists, FailedPrecondition, NotFound
from fedmesh.store import keys


class Phase(StrEnum):
    """The phases of a round."""

    PENDING = "PENDING"
    COLLECTING = "COLLECTING"
    AGGREGATING = "AGGREGATING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


TERMINAL = frozenset({Phase.COMPLETED, Phase.FAILED})


@dataclass(frozen=True)
class Receipt:
    """A node's update, durably spooled by the aggregator."""

    node_id: str
    digest: str
    num_samples: int
    payload_bytes: int
    local_loss: float
    received_unix_ms: int

    def to_json(self) -> str:
        """JSON form stored in Redis."""
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> Receipt:
        """Parse the stored JSON form."""
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class RoundRecord:
    """One round as stored."""

    run_id: str
    round_no: int
    phase: Phase
    participants: frozenset[str]
    deadline_unix_ms: int
    opened_unix_ms: int
    fields: Mapping[str, str] = field(default_factory=dict)
    receipts: Mapping[str, Receipt] = field(default_factory=dict)


class ReceiptOutcome(StrEnum):
    """What recording a receipt did."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"


# KEYS[1] round hash, KEYS[2] participants set. ARGV: phase, deadline, opened, field json.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.error_reply('EXISTS') end
redis.call('HSET', KEYS[1], 'phase', ARGV[1], 'deadline_unix_ms', ARGV[2],
           'opened_unix_ms', ARGV[3])
local extra = cjson.decode(ARGV[4])
for k, v in pairs(extra) do redis.call('HSET', KEYS[1], k, v) end
for i = 5, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
return 'OK'
"""

# KEYS[1] round hash. ARGV: expected phases (json list), new phase, field json.
_TRANSITION = """
local phase = redis.call('HGET', KEYS[1], 'phase')
if not phase then return redis.error_reply('NOTFOUND') end
local expected = cjson.decode(ARGV[1])
local ok = false
for _, p in ipairs(expected) do if p == phase then ok = true end end
if not ok then return redis.error_reply('PHASE ' .. phase) end
redis.call('HSET', KEYS[1], 'phase', ARGV[2])
local extra = cjson.decode(ARGV[3])
for k, v in pairs(extra) do redis.call('HSET', KEYS[1], k, v) end
return phase
"""

# KEYS[1] round hash, KEYS[2] participants, KEYS[3] receipts. ARGV: node, digest, receipt json.
_RECEIPT = """
local phase = redis.call('HGET', KEYS[1], 'phase')
if not phase then return redis.error_reply('NOTFOUND') end
if phase ~= 'COLLECTING' then return redis.error_reply('PHASE ' .. phase) end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then return redis.error_reply('NOTSELECTED') end
local old = redis.call('HGET', KEYS[3], ARGV[1])
if old then
  if cjson.decode(old)['digest'] == ARGV[2] then return 'duplicate' end
  return redis.error_reply('CONFLICT ' .. cjson.decode(old)['digest'])
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
return 'accepted'
"""

# The receipts of a secure round's contributors, all or none. KEYS as above;
# ARGV: node, digest, receipt json, repeated.
_RECEIPTS = """
local phase = redis.call('HGET', KEYS[1], 'phase')
if not phase then return redis.error_reply('NOTFOUND') end
if phase ~= 'COLLECTING' then return redis.error_reply('PHASE ' .. phase) end
for i = 1, #ARGV, 3 do
  if redis.call('SISMEMBER', KEYS[2], ARGV[i]) == 0 then
    return redis.error_reply('NOTSELECTED ' .. ARGV[i])
  end
  local old = redis.call('HGET', KEYS[3], ARGV[i])
  if old and cjson.decode(old)['digest'] ~= ARGV[i + 1] then
    return redis.error_reply('CONFLICT ' .. ARGV[i] .. ' ' .. cjson.decode(old)['digest'])
  end
end
for i = 1, #ARGV, 3 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 2]) end
return 'accepted'
"""

# KEYS[1] round hash. ARGV: field, value. Set once while the round is open; returns the value kept.
_NOTE = """
local phase = redis.call('HGET', KEYS[1], 'phase')
if not phase then return redis.error_reply('NOTFOUND') end
if phase ~= 'PENDING' and phase ~= 'COLLECTING' then return redis.error_reply('PHASE ' .. phase) end
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then return old end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return ARGV[2]
"""


def _error_text(exc: ResponseError) -> str:
    return str(exc).strip()


class RoundStore:
    """Round records of every run, in Redis."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._create = redis.register_script(_CREATE)
        self._transition = redis.register_script(_TRANSITION)
        self._receipt = redis.register_script(_RECEIPT)
        self._receipts = redis.register_script(_RECEIPTS)
        self._note = redis.register_script(_NOTE)

    async def create(
        self,
        run_id: str,
        round_no: int,
        participants: Sequence[str],
        deadline_unix_ms: int,
        opened_unix_ms: int,
        fields: Mapping[str, str] | None = None,
    ) -> None:
        """Create a round in PENDING with its participants; AlreadyExists if it exists."""
        try:
            await self._create(
                keys=[keys.round_key(run_id, round_no), keys.participants_key(run_id, round_no)],
                args=[
                    Phase.PENDING.value,
                    deadline_unix_ms,
                    opened_unix_ms,
                    json.dumps(dict(fields or {})),
                    *participants,
                ],
            )
        except ResponseError as exc:
            if _error_text(exc) == "EXISTS":
                raise AlreadyExists(f"round {round_no} of run {run_id} already exists") from None
            raise
        await self._redis.zadd(keys.deadlines_key(), {f"{run_id}|{round_no}": deadline_unix_ms})

    async def transition(
        self,
        run_id: str,
        round_no: int,
        expected: Phase | Sequence[Phase],
        new: Phase,
        fields: Mapping[str, str] | None = None,
    ) -> Phase:
        """Move to ``new`` only from an ``expected`` phase; Aborted if another writer won."""
        wanted = [expected] if isinstance(expected, Phase) else list(expected)
        try:
            previous = await self._transition(
                keys=[keys.round_key(run_id, round_no)],
                args=[
                    json.dumps([p.value for p in wanted]),
                    new.value,
                    json.dumps(dict(fields or {})),
                ],
            )
        except ResponseError as exc:
            text = _error_text(exc)
            if text == "NOTFOUND":
                raise NotFound(f"round {round_no} of run {run_id} does not exist") from None
            if text.startswith("PHASE "):
                raise Aborted(
                    f"round {round_no} of run {run_id} is {text[6:]}; expected "
                    f"{' or '.join(p.value for p in wanted)} to move it to {new.value}"
                ) from None
            raise
        if new in TERMINAL:
            await self._redis.zrem(keys.deadlines_key(), f"{run_id}|{round_no}")
        return Phase(previous)

    async def set_deadline(self, run_id: str, round_no: int, deadline_unix_ms: int) -> None:
        """Store a new deadline for the round (e.g. the aggregation deadline)."""
        await self._redis.hset(
            keys.round_key(run_id, round_no), "deadline_unix_ms", str(deadline_unix_ms)
        )
        await self._redis.zadd(keys.deadlines_key(), {f"{run_id}|{round_no}": deadline_unix_ms})

    async def record_receipt(self, run_id: str, round_no: int, receipt: Receipt) -> ReceiptOutcome:
        """Record a durably spooled update; the same digest again is a duplicate.

        Raises FailedPrecondition when the round is not collecting or the node was
        not selected, AlreadyExists when the node already sent a different update.
        """
        try:
            outcome = await self._receipt(
                keys=[
                    keys.round_key(run_id, round_no),
                    keys.participants_key(run_id, round_no),
                    keys.receipts_key(run_id, round_no),
                ],
                args=[receipt.node_id, receipt.digest, receipt.to_json()],
            )
        except ResponseError as exc:
            raise _receipt_error(_error_text(exc), run_id, round_no, receipt) from None
        return ReceiptOutcome(outcome)

    async def record_receipts(
        self, run_id: str, round_no: int, receipts: Sequence[Receipt]
    ) -> None:
        """Record several receipts at once, all or none (the contributors of a secure sum).

        Raises FailedPrecondition when the round is not collecting or a node was not
        selected, AlreadyExists when a node already has a receipt of another digest.
        """
        if not receipts:
            return
        args = [item for r in receipts for item in (r.node_id, r.digest, r.to_json())]
        try:
            await self._receipts(
                keys=[
                    keys.round_key(run_id, round_no),
                    keys.participants_key(run_id, round_no),
                    keys.receipts_key(run_id, round_no),
                ],
                args=args,
            )
        except ResponseError as exc:
            text = _error_text(exc)
            code, _, detail = text.partition(" ")
            if code not in ("NOTSELECTED", "CONFLICT"):
                raise _receipt_error(text, run_id, round_no, receipts[0]) from None
            node, _, digest = detail.partition(" ")
            named = next(r for r in receipts if r.node_id == node)
            raise _receipt_error(f"{code} {digest}".strip(), run_id, round_no, named) from None

    async def note_once(self, run_id: str, round_no: int, field: str, value: str) -> str:
        """Set a field of an open round unless it is set; return the value it holds now.

        Raises NotFound when the round does not exist, FailedPrecondition once it left
        PENDING and COLLECTING.
        """
        try:
            kept = await self._note(keys=[keys.round_key(run_id, round_no)], args=[field, value])
        except ResponseError as exc:
            text = _error_text(exc)
            if text == "NOTFOUND":
                raise NotFound(f"round {round_no} of run {run_id} does not exist") from None
            if text.startswith("PHASE "):
                raise FailedPrecondition(
                    f"round {round_no} of run {run_id} is {text[6:]}, no longer open"
                ) from None
            raise
        return str(kept)

    async def check_can_submit(self, run_id: str, round_no: int, node_id: str) -> str | None:
        """Raise unless ``node_id`` may upload to the round now; return its stored digest."""
        record = await self.get(run_id, round_no)
        if record.phase is not Phase.COLLECTING:
            raise FailedPrecondition(
                f"round {round_no} of run {run_id} is {record.phase.value}, not COLLECTING"
            )
        if node_id not in record.participants:
            raise FailedPrecondition(
                f"node {node_id!r} was not selected for round {round_no} of run {run_id}"
            )
        receipt = record.receipts.get(node_id)
        return receipt.digest if receipt else None

    async def drop_receipt(self, run_id: str, round_no: int, node_id: str) -> None:
        """Forget a receipt whose spooled data was lost, so the node's retry is accepted."""
        await self._redis.hdel(keys.receipts_key(run_id, round_no), node_id)

    async def exists(self, run_id: str, round_no: int) -> bool:
        """Whether the round exists."""
        return bool(await self._redis.exists(keys.round_key(run_id, round_no)))

    async def get(self, run_id: str, round_no: int) -> RoundRecord:
        """The whole round record; NotFound when it does not exist."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hgetall(keys.round_key(run_id, round_no))
        pipe.smembers(keys.participants_key(run_id, round_no))
        pipe.hgetall(keys.receipts_key(run_id, round_no))
        raw, participants, receipts = await pipe.execute()
        if not raw:
            raise NotFound(f"round {round_no} of run {run_id} does not exist")
        fields: dict[str, Any] = dict(raw)
        return RoundRecord(
            run_id=run_id,
            round_no=round_no,
            phase=Phase(fields.pop("phase")),
            participants=frozenset(participants),
            deadline_unix_ms=int(fields.pop("deadline_unix_ms")),
            opened_unix_ms=int(fields.pop("opened_unix_ms")),
            fields=fields,
            receipts={node: Receipt.from_json(value) for node, value in receipts.items()},
        )

    async def due(self, now_unix_ms: int, limit: int = 100) -> list[tuple[str, int]]:
        """Rounds whose stored deadline has passed: (run id, round)."""
        members = await self._redis.zrangebyscore(
            keys.deadlines_key(), "-inf", now_unix_ms, start=0, num=limit
        )
        due = []
        for member in members:
            run_id, _, round_no = str(member).rpartition("|")
            due.append((run_id, int(round_no)))
        return due


def _receipt_error(text: str, run_id: str, round_no: int, receipt: Receipt) -> Exception:
    if text == "NOTFOUND":
        return NotFound(f"round {round_no} of run {run_id} does not exist")
    if text.startswith("PHASE "):
        return FailedPrecondition(f"round {round_no} of run {run_id} is {text[6:]}, not COLLECTING")
    if text == "NOTSELECTED":
        return FailedPrecondition(
            f"node {receipt.node_id!r} was not selected for round {round_no} of run {run_id}"
        )
    if text.startswith("CONFLICT "):
        return AlreadyExists(
            f"node {receipt.node_id!r} already submitted update {text[9:]} for round "
            f"{round_no} of run {run_id}; refusing a different update {receipt.digest}"
        )
    return RuntimeError(text)
