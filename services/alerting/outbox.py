"""The durable outbox: per sink, a Redis list of notifications delivered oldest first.

A notification leaves the outbox only once its sink took it (or after the retry
window, into a capped dead-letter list), so a sink that was down receives every
notification when it is back, and a restart loses none of them. The head is
removed only if it is still the one delivered, so two workers cannot drop a
notification that was not sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from fedmesh.services.alerting import keys
from fedmesh.services.alerting.notification import Notification

DEAD_LETTERS_KEPT = 1000

# KEYS: outbox, sink. ARGV: head, now. Returns the consecutive failures before this success.
_DELIVERED = """
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[1] then return -1 end
redis.call('LPOP', KEYS[1])
redis.call('HINCRBY', KEYS[2], 'delivered', 1)
local before = tonumber(redis.call('HGET', KEYS[2], 'consecutive_failures') or '0')
redis.call('HSET', KEYS[2], 'consecutive_failures', 0, 'next_attempt_ms', 0,
  'last_success_ms', ARGV[2])
return before
"""

# KEYS: sink. ARGV: error, next attempt. Returns the consecutive failures now.
_FAILED = """
redis.call('HINCRBY', KEYS[1], 'failed', 1)
local failures = redis.call('HINCRBY', KEYS[1], 'consecutive_failures', 1)
redis.call('HSET', KEYS[1], 'last_error', ARGV[1], 'next_attempt_ms', ARGV[2])
return failures
"""

# KEYS: outbox, sink, dead letters. ARGV: head, reason, kept. Returns the consecutive failures.
_GIVE_UP = """
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[1] then return -1 end
redis.call('LPOP', KEYS[1])
redis.call('LPUSH', KEYS[3], ARGV[1])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[3]) - 1)
redis.call('HINCRBY', KEYS[2], 'given_up', 1)
redis.call('HINCRBY', KEYS[2], 'failed', 1)
redis.call('HSET', KEYS[2], 'last_error', ARGV[2], 'next_attempt_ms', 0)
return redis.call('HINCRBY', KEYS[2], 'consecutive_failures', 1)
"""


@dataclass(frozen=True)
class SinkCounters:
    """A sink's delivery record, as stored."""

    delivered: int
    failed: int
    given_up: int
    consecutive_failures: int
    last_error: str
    next_attempt_unix_ms: int
    queued: int


@dataclass(frozen=True)
class Head:
    """The oldest notification waiting for a sink, with its stored text."""

    raw: str
    notification: Notification


class Outbox:
    """Every sink's queue and delivery counters."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._delivered = redis.register_script(_DELIVERED)
        self._failed = redis.register_script(_FAILED)
        self._give_up = redis.register_script(_GIVE_UP)

    @staticmethod
    def enqueue(pipe: Pipeline, notification: Notification) -> None:
        """Queue ``notification`` inside the caller's transaction."""
        pipe.rpush(keys.outbox_key(notification.receiver), notification.to_json())

    async def head(self, sink: str) -> Head | None:
        """The oldest waiting notification of ``sink``."""
        raw = await self._redis.lindex(keys.outbox_key(sink), 0)
        if raw is None:
            return None
        return Head(str(raw), Notification.from_json(str(raw)))

    async def delivered(self, sink: str, head: Head, now_ms: int) -> int:
        """Remove the delivered head; the consecutive failures the sink had before it."""
        return int(
            await self._delivered(
                keys=[keys.outbox_key(sink), keys.sink_key(sink)], args=[head.raw, now_ms]
            )
        )

    async def failed(self, sink: str, error: str, next_attempt_ms: int) -> int:
        """Record a failed attempt; the consecutive failures now."""
        return int(await self._failed(keys=[keys.sink_key(sink)], args=[error, next_attempt_ms]))

    async def give_up(self, sink: str, head: Head, reason: str) -> int:
        """Move the head to the dead letters; the consecutive failures now."""
        return int(
            await self._give_up(
                keys=[keys.outbox_key(sink), keys.sink_key(sink), keys.dead_letter_key(sink)],
                args=[head.raw, reason, DEAD_LETTERS_KEPT],
            )
        )

    async def counters(self, sink: str) -> SinkCounters:
        """The stored delivery record of ``sink``."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(keys.sink_key(sink))
        pipe.llen(keys.outbox_key(sink))
        raw, queued = await pipe.execute()
        fields = cast(dict[str, str], raw)
        return SinkCounters(
            delivered=int(fields.get("delivered", 0)),
            failed=int(fields.get("failed", 0)),
            given_up=int(fields.get("given_up", 0)),
            consecutive_failures=int(fields.get("consecutive_failures", 0)),
            last_error=fields.get("last_error", ""),
            next_attempt_unix_ms=int(fields.get("next_attempt_ms", 0)),
            queued=int(queued),
        )
