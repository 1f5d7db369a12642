"""Version records in Redis: appended atomically per model, monotonic under concurrency.

A version is appended by one Lua script that checks the head it was built on, writes
the record, moves the head, records the (run, round) publication and counts a
reference to the blob, all at once: a version is either wholly visible or absent.
A publisher that lost the race to another one rebuilds its record on the new head
and tries again, so every publisher gets its own number, with no gaps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from fedmesh.errors import Aborted
from fedmesh.services.registry import keys
from fedmesh.services.registry.records import Evaluation, SignedRecord

_APPEND_ATTEMPTS = 1000

# KEYS: head, records, publications, blob refs.
# ARGV: expected head, new version, record json, record digest, publication ("" if none), blob.
_APPEND = """
if ARGV[5] ~= '' then
  local existing = redis.call('HGET', KEYS[3], ARGV[5])
  if existing then return {'duplicate', existing} end
end
local head = redis.call('HGET', KEYS[1], 'head') or '0'
if head ~= ARGV[1] then return {'conflict', head} end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[1], 'head', ARGV[2], 'head_digest', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[3], ARGV[5], ARGV[2]) end
redis.call('HINCRBY', KEYS[4], ARGV[6], 1)
return {'appended', ARGV[2]}
"""

# KEYS: aliases, dropped, blob refs. ARGV: version, blob digest.
_DROP_BLOB = """
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
  if v == ARGV[1] then return 'aliased' end
end
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 'already' end
local left = redis.call('HINCRBY', KEYS[3], ARGV[2], -1)
if left <= 0 then redis.call('HDEL', KEYS[3], ARGV[2]) end
return 'dropped'
"""


@dataclass(frozen=True)
class Appended:
    """Outcome of an append: the version number, and whether (run, round) already had it."""

    version: int
    duplicate: bool


@dataclass(frozen=True)
class RawVersion:
    """A version as read from Redis, before verification."""

    signed: SignedRecord
    evaluation: Evaluation | None
    blob_dropped: bool


RecordBuilder = Callable[[int, str], SignedRecord]
"""Makes the signed record of a new version from its number and the previous record digest."""


def publication_key(run_id: str, round_no: int) -> str:
    """The idempotency key of a run's round."""
    return f"{run_id}|{round_no}"


class VersionStore:
    """Every model's versions, aliases and blob references, in Redis."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._append = redis.register_script(_APPEND)
        self._drop_blob = redis.register_script(_DROP_BLOB)

    async def add_model(self, name: str) -> None:
        """List ``name`` among the models (idempotent)."""
        await self._redis.sadd(keys.models_key(), name)

    async def model_names(self) -> list[str]:
        """Every listed model name, sorted."""
        return sorted(str(name) for name in await self._redis.smembers(keys.models_key()))

    async def head(self, name: str) -> tuple[int, str]:
        """The latest version of ``name`` and its record digest; (0, "") before any."""
        head, digest = await self._redis.hmget(keys.head_key(name), ["head", "head_digest"])
        return (int(head), str(digest)) if head else (0, "")

    async def append(
        self,
        name: str,
        build: RecordBuilder,
        digest: str,
        publication: str | None,
    ) -> Appended:
        """Append the record ``build(version, previous_digest)`` makes, on the current head.

        When ``publication`` (run|round) already has a version, nothing is written and
        that version comes back marked duplicate.
        """
        for _ in range(_APPEND_ATTEMPTS):
            head, head_digest = await self.head(name)
            signed = build(head + 1, head_digest)
            outcome, version = await self._append(
                keys=[
                    keys.head_key(name),
                    keys.records_key(name),
                    keys.publications_key(name),
                    keys.blob_refs_key(name),
                ],
                args=[
                    head,
                    head + 1,
                    signed.to_json(),
                    signed.record_digest,
                    publication or "",
                    digest,
                ],
            )
            if outcome != "conflict":
                return Appended(int(version), duplicate=outcome == "duplicate")
        raise Aborted(f"could not append a version of {name!r}: too many concurrent publishers")

    async def publication(self, name: str, run_id: str, round_no: int) -> int | None:
        """The version already published for a run's round, if any."""
        raw = await self._redis.hget(keys.publications_key(name), publication_key(run_id, round_no))
        return int(raw) if raw else None

    async def exists(self, name: str, version: int) -> bool:
        """Whether ``name`` has a record for ``version``."""
        return bool(await self._redis.hexists(keys.records_key(name), str(version)))

    async def get_many(self, name: str, versions: Sequence[int]) -> list[RawVersion | None]:
        """The stored versions (None where a record is missing), in the order asked."""
        if not versions:
            return []
        fields = [str(v) for v in versions]
        pipe = self._redis.pipeline(transaction=True)
        pipe.hmget(keys.records_key(name), fields)
        pipe.hmget(keys.evaluations_key(name), fields)
        pipe.smismember(keys.dropped_key(name), fields)
        records, evaluations, dropped = await pipe.execute()
        out: list[RawVersion | None] = []
        for version, record, evaluation, gone in zip(
            versions, records, evaluations, dropped, strict=True
        ):
            if record is None:
                out.append(None)
                continue
            out.append(
                RawVersion(
                    signed=SignedRecord.from_json(record, name, version),
                    evaluation=Evaluation.from_json(evaluation) if evaluation else None,
                    blob_dropped=bool(gone),
                )
            )
        return out

    async def set_evaluation(self, name: str, version: int, evaluation: Evaluation) -> None:
        """Attach evaluation metrics to a version (replacing earlier ones)."""
        await self._redis.hset(keys.evaluations_key(name), str(version), evaluation.to_json())

    async def aliases(self, name: str) -> dict[str, int]:
        """Alias → version of ``name``."""
        raw = await self._redis.hgetall(keys.aliases_key(name))
        return {str(alias): int(version) for alias, version in raw.items()}

    async def dropped(self, name: str) -> set[int]:
        """Versions of ``name`` whose blob retention deleted."""
        return {int(v) for v in await self._redis.smembers(keys.dropped_key(name))}

    async def drop_blob(self, name: str, version: int, digest: str) -> str:
        """Mark a version's blob dropped unless aliased: 'dropped', 'aliased' or 'already'."""
        return str(
            await self._drop_blob(
                keys=[keys.aliases_key(name), keys.dropped_key(name), keys.blob_refs_key(name)],
                args=[version, digest],
            )
        )

    async def blob_references(self, digest: str) -> int:
        """How many live versions, across every model, hold the blob ``digest``."""
        names = await self.model_names()
        if not names:
            return 0
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.hget(keys.blob_refs_key(name), digest)
        return sum(int(count) for count in await pipe.execute() if count)

    async def referenced_blobs(self) -> set[str]:
        """Digests of every blob some live version holds."""
        referenced: set[str] = set()
        for name in await self.model_names():
            counts = await self._redis.hgetall(keys.blob_refs_key(name))
            referenced.update(str(d) for d, count in counts.items() if int(count) > 0)
        return referenced
