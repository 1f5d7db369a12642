"""Silences: matchers that mute firing alerts until they end or are expired (in Redis)."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from fedmesh.errors import FailedPrecondition, InvalidArgument, NotFound
from fedmesh.services.alerting import keys
from fedmesh.services.alerting.matchers import Matcher, MatchOp, make_matcher, matches_all

MAX_MATCHERS = 32
MAX_DURATION_S = 366 * 86_400.0
MAX_COMMENT_CHARS = 1024
MAX_CREATOR_CHARS = 128

# KEYS: silence, silences index. ARGV: now, id.
_EXPIRE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return redis.error_reply('NOTFOUND') end
local silence = cjson.decode(raw)
if tonumber(silence['ends_ms']) <= tonumber(ARGV[1]) then
  return redis.error_reply('EXPIRED ' .. string.format('%d', silence['ends_ms']))
end
silence['ends_ms'] = tonumber(ARGV[1])
local out = cjson.encode(silence)
redis.call('SET', KEYS[1], out)
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
return out
"""


@dataclass(frozen=True)
class Silence:
    """Mutes every alert its matchers select between its start and its end."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_unix_ms: int
    ends_unix_ms: int
    created_by: str
    comment: str

    def active(self, now_ms: int) -> bool:
        """Whether the silence mutes alerts at ``now_ms``."""
        return self.starts_unix_ms <= now_ms < self.ends_unix_ms

    def mutes(self, labels: Mapping[str, str]) -> bool:
        """Whether the matchers select ``labels``."""
        return matches_all(self.matchers, labels)

    def to_json(self) -> str:
        """The stored form."""
        return json.dumps(
            {
                "id": self.id,
                "matchers": [
                    {"name": m.name, "op": m.op.value, "value": m.value} for m in self.matchers
                ],
                "starts_ms": self.starts_unix_ms,
                "ends_ms": self.ends_unix_ms,
                "created_by": self.created_by,
                "comment": self.comment,
            }
        )

    @classmethod
    def from_json(cls, raw: str) -> Silence:
        """Parse the stored form."""
        data = json.loads(raw)
        return cls(
            id=data["id"],
            matchers=tuple(
                make_matcher(m["name"], MatchOp(m["op"]), m["value"]) for m in data["matchers"]
            ),
            starts_unix_ms=int(data["starts_ms"]),
            ends_unix_ms=int(data["ends_ms"]),
            created_by=data["created_by"],
            comment=data["comment"],
        )


def check_silence(
    matchers: Sequence[Matcher], duration_s: float, created_by: str, comment: str
) -> None:
    """Refuse a silence that is empty, silences everything, or has a bad duration or author."""
    if not matchers:
        raise InvalidArgument("a silence needs at least one matcher")
    if len(matchers) > MAX_MATCHERS:
        raise InvalidArgument(
            f"{len(matchers)} matchers given; at most {MAX_MATCHERS} are accepted"
        )
    if all(m.matches({}) for m in matchers):
        raise InvalidArgument(
            "the matchers "
            + ", ".join(str(m) for m in matchers)
            + " also match alerts without those labels, so they would silence everything; "
            "expected at least one matcher that does not match the empty value"
        )
    if not math.isfinite(duration_s) or not 0 < duration_s <= MAX_DURATION_S:
        raise InvalidArgument(
            f"duration_s is {duration_s!r}; expected more than 0 and at most {MAX_DURATION_S:.0f}"
        )
    if not created_by:
        raise InvalidArgument("created_by is required (who is silencing)")
    if len(created_by) > MAX_CREATOR_CHARS:
        raise InvalidArgument(f"created_by has more than {MAX_CREATOR_CHARS} characters")
    if len(comment) > MAX_COMMENT_CHARS:
        raise InvalidArgument(f"comment has more than {MAX_COMMENT_CHARS} characters")


class SilenceStore:
    """Silences in Redis, kept for the retention period after they end."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._expire = redis.register_script(_EXPIRE)

    async def create(
        self,
        matchers: Sequence[Matcher],
        duration_s: float,
        created_by: str,
        comment: str,
        now_ms: int,
    ) -> Silence:
        """Validate and store a silence starting now."""
        check_silence(matchers, duration_s, created_by, comment)
        silence = Silence(
            id=str(uuid.uuid4()),
            matchers=tuple(matchers),
            starts_unix_ms=now_ms,
            ends_unix_ms=now_ms + max(1, round(duration_s * 1000)),
            created_by=created_by,
            comment=comment,
        )
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(keys.silence_key(silence.id), silence.to_json())
        pipe.zadd(keys.silences_key(), {silence.id: silence.ends_unix_ms})
        await pipe.execute()
        return silence

    async def expire(self, silence_id: str, now_ms: int) -> Silence:
        """End a silence now; NotFound if unknown, FailedPrecondition if it already ended."""
        try:
            raw = await self._expire(
                keys=[keys.silence_key(silence_id), keys.silences_key()], args=[now_ms, silence_id]
            )
        except ResponseError as exc:
            text = str(exc).strip()
            if text == "NOTFOUND":
                raise NotFound(f"no silence has id {silence_id!r}") from None
            if text.startswith("EXPIRED "):
                raise FailedPrecondition(
                    f"silence {silence_id} already ended at {text[8:]} (unix ms)"
                ) from None
            raise
        return Silence.from_json(str(raw))

    async def all(self) -> list[Silence]:
        """Every retained silence, latest end first."""
        ids = await self._redis.zrange(keys.silences_key(), 0, -1, desc=True)
        return await self._load(ids)

    async def active(self, now_ms: int) -> list[Silence]:
        """The silences muting alerts at ``now_ms``."""
        ids = await self._redis.zrangebyscore(keys.silences_key(), f"({now_ms}", "+inf")
        return [s for s in await self._load(ids) if s.active(now_ms)]

    async def prune(self, cutoff_ms: int) -> int:
        """Forget silences that ended before ``cutoff_ms``; how many."""
        ids = await self._redis.zrangebyscore(keys.silences_key(), "-inf", cutoff_ms)
        if not ids:
            return 0
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(*(keys.silence_key(str(i)) for i in ids))
        pipe.zrem(keys.silences_key(), *ids)
        await pipe.execute()
        return len(ids)

    async def _load(self, ids: Sequence[object]) -> list[Silence]:
        if not ids:
            return []
        raws = await self._redis.mget([keys.silence_key(str(i)) for i in ids])
        return [Silence.from_json(str(raw)) for raw in raws if raw]
