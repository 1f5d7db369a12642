"""Alerts in Redis: fire, re-fire (dedup), resolve, expire, acknowledge, prune — each atomic.

Every event costs one Redis round trip: one Lua script counts it, folds it into
the alert its labels identify (or opens the alert, within the rule's rate
limit), schedules the alert's group, and publishes the change.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from fedmesh.errors import FailedPrecondition, NotFound
from fedmesh.services.alerting import keys
from fedmesh.services.alerting.drafts import AlertDraft
from fedmesh.services.alerting.model import Alert, AlertState, Severity

RATE_WINDOW_MS = 60_000

# KEYS: alert, firing, resolved, group, group members, groups due, stats, rate counter.
# ARGV: mode, fp, now, name, labels, annotations, severity, starts, resolve timeout,
#       group key, route path, group labels, group wait, source, rate limit, rate window,
#       changes channel, group key prefix, events to count (1, or 0 for a follow-up).
_INGEST = """
redis.call('HINCRBY', KEYS[7], 'events_received', tonumber(ARGV[19]))
local now = tonumber(ARGV[3])
local state = redis.call('HGET', KEYS[1], 'state')
if ARGV[1] == 'resolve' then
  if state ~= 'firing' then
    return {state or 'unknown', tonumber(redis.call('HGET', KEYS[1], 'count') or '0'), 0}
  end
  redis.call('HSET', KEYS[1], 'state', 'resolved', 'ends_ms', now, 'updated_ms', now)
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZADD', KEYS[3], now, ARGV[2])
  local group = ARGV[18] .. redis.call('HGET', KEYS[1], 'group_key')
  if redis.call('EXISTS', group) == 1 then redis.call('HINCRBY', group, 'version', 1) end
  redis.call('PUBLISH', ARGV[17], ARGV[2])
  return {'resolved', tonumber(redis.call('HGET', KEYS[1], 'count')), 1}
end
if state == 'firing' then
  local count = redis.call('HINCRBY', KEYS[1], 'count', 1)
  redis.call('HSET', KEYS[1], 'updated_ms', now, 'annotations', ARGV[6], 'source', ARGV[14])
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[9]), ARGV[2])
  return {'firing', count, 0}
end
local limit = tonumber(ARGV[15])
if limit > 0 then
  local opened = redis.call('INCR', KEYS[8])
  if opened == 1 then redis.call('PEXPIRE', KEYS[8], tonumber(ARGV[16]) * 2) end
  if opened > limit then
    redis.call('HINCRBY', KEYS[7], 'rate_limited', 1)
    return {'rate_limited', 0, 0}
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[2], 'name', ARGV[4], 'labels', ARGV[5],
  'annotations', ARGV[6], 'severity', ARGV[7], 'state', 'firing', 'starts_ms', ARGV[8],
  'ends_ms', 0, 'updated_ms', now, 'count', 1, 'group_key', ARGV[10], 'source', ARGV[14],
  'resolve_timeout_ms', ARGV[9])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[9]), ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[5], ARGV[2])
if redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('HSET', KEYS[4], 'key', ARGV[10], 'route', ARGV[11], 'labels', ARGV[12],
    'created_ms', now, 'last_notified_ms', 0, 'version', 0)
  redis.call('ZADD', KEYS[6], now + tonumber(ARGV[13]), ARGV[10])
end
redis.call('HINCRBY', KEYS[4], 'version', 1)
redis.call('PUBLISH', ARGV[17], ARGV[2])
return {'firing', 1, 1}
"""

# KEYS: firing, resolved. ARGV: now, alert key prefix, group key prefix, channel, limit.
# An alert resolves at the time it expired (last event + resolve timeout), not at the sweep.
_EXPIRE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0,
  tonumber(ARGV[5]))
for i = 1, #due, 2 do
  local fp, ends = due[i], due[i + 1]
  local alert = ARGV[2] .. fp
  redis.call('HSET', alert, 'state', 'resolved', 'ends_ms', ends, 'updated_ms', ARGV[1])
  redis.call('ZREM', KEYS[1], fp)
  redis.call('ZADD', KEYS[2], ends, fp)
  local group = ARGV[3] .. (redis.call('HGET', alert, 'group_key') or '')
  if redis.call('EXISTS', group) == 1 then redis.call('HINCRBY', group, 'version', 1) end
  redis.call('PUBLISH', ARGV[4], fp)
end
return #due / 2
"""

# KEYS: resolved. ARGV: cutoff, alert key prefix, group key prefix, limit.
# A resolved alert still waiting in its group (to be notified as resolved) is kept.
_PRUNE = """
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[4]))
local pruned = 0
for _, fp in ipairs(old) do
  local alert = ARGV[2] .. fp
  local members = ARGV[3] .. (redis.call('HGET', alert, 'group_key') or '') .. ':alerts'
  if redis.call('SISMEMBER', members, fp) == 0 then
    redis.call('DEL', alert)
    redis.call('ZREM', KEYS[1], fp)
    pruned = pruned + 1
  end
end
return pruned
"""

# KEYS: alert. ARGV: by, now, channel, fp.
_ACKNOWLEDGE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return redis.error_reply('NOTFOUND') end
if state ~= 'firing' then return redis.error_reply('STATE ' .. state) end
redis.call('HSET', KEYS[1], 'acked_by', ARGV[1], 'acked_ms', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 'OK'
"""


@dataclass(frozen=True)
class Ingested:
    """What an event did: the alert's state after it and its dedup count."""

    fingerprint: str
    state: AlertState | None
    count: int
    changed: bool
    rate_limited: bool = False


def alert_from_hash(raw: dict[str, str]) -> Alert:
    """An alert from its stored hash."""
    return Alert(
        fingerprint=raw["fingerprint"],
        name=raw["name"],
        labels=json.loads(raw["labels"]),
        annotations=json.loads(raw["annotations"]),
        severity=Severity(int(raw["severity"])),
        state=AlertState(raw["state"]),
        starts_unix_ms=int(raw["starts_ms"]),
        ends_unix_ms=int(float(raw["ends_ms"])),
        updated_unix_ms=int(raw["updated_ms"]),
        count=int(raw["count"]),
        group_key=raw["group_key"],
        source=raw.get("source", ""),
        acknowledged_by=raw.get("acked_by", ""),
        acknowledged_unix_ms=int(raw.get("acked_ms", "0")),
    )


class AlertStore:
    """Every alert, firing and recently resolved, in Redis."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._ingest = redis.register_script(_INGEST)
        self._expire = redis.register_script(_EXPIRE)
        self._prune = redis.register_script(_PRUNE)
        self._acknowledge = redis.register_script(_ACKNOWLEDGE)

    def _ingest_call(
        self, draft: AlertDraft, now_ms: int, counted: bool = True
    ) -> tuple[list[str], list[str | int]]:
        route = draft.route
        return (
            [
                keys.alert_key(draft.fingerprint),
                keys.firing_key(),
                keys.resolved_key(),
                keys.group_key(draft.group_key),
                keys.group_members_key(draft.group_key),
                keys.groups_due_key(),
                keys.stats_key(),
                keys.rate_key(draft.name, now_ms // RATE_WINDOW_MS),
            ],
            [
                "resolve" if draft.resolve else "fire",
                draft.fingerprint,
                now_ms,
                draft.name,
                json.dumps(draft.labels, sort_keys=True),
                json.dumps(draft.annotations, sort_keys=True),
                int(draft.severity),
                draft.starts_unix_ms,
                draft.resolve_timeout_ms,
                draft.group_key,
                route.path,
                json.dumps(draft.group_labels, sort_keys=True),
                route.group_wait_ms,
                draft.source,
                draft.max_new_per_minute,
                RATE_WINDOW_MS,
                keys.changes_channel(),
                keys.group_key(""),
                1 if counted else 0,
            ],
        )

    async def ingest(self, draft: AlertDraft, now_ms: int) -> Ingested:
        """Apply one draft (one round trip)."""
        script_keys, args = self._ingest_call(draft, now_ms)
        reply = await self._ingest(keys=script_keys, args=args)
        return _ingested(draft.fingerprint, reply)

    async def ingest_many(
        self, drafts: Sequence[AlertDraft], now_ms: int, *, one_event: bool = False
    ) -> list[Ingested]:
        """Apply drafts in order, pipelined (one round trip for all).

        ``one_event`` counts them as a single received event (an anomaly report
        below every band resolves several alerts at once).
        """
        pipe = self._redis.pipeline(transaction=False)
        for i, draft in enumerate(drafts):
            script_keys, args = self._ingest_call(draft, now_ms, counted=i == 0 or not one_event)
            await self._ingest(keys=script_keys, args=args, client=pipe)
        replies = await pipe.execute()
        return [_ingested(d.fingerprint, r) for d, r in zip(drafts, replies, strict=True)]

    async def expire(self, now_ms: int, limit: int = 500) -> int:
        """Resolve firing alerts not re-fired within their resolve timeout; how many."""
        return int(
            await self._expire(
                keys=[keys.firing_key(), keys.resolved_key()],
                args=[
                    now_ms,
                    keys.alert_key(""),
                    keys.group_key(""),
                    keys.changes_channel(),
                    limit,
                ],
            )
        )

    async def prune(self, cutoff_ms: int, limit: int = 500) -> int:
        """Forget resolved alerts that ended before ``cutoff_ms`` and were notified; how many."""
        return int(
            await self._prune(
                keys=[keys.resolved_key()],
                args=[cutoff_ms, keys.alert_key(""), keys.group_key(""), limit],
            )
        )

    async def acknowledge(self, fingerprint: str, by: str, now_ms: int) -> Alert:
        """Mark a firing alert as being handled by ``by``."""
        try:
            await self._acknowledge(
                keys=[keys.alert_key(fingerprint)],
                args=[by, now_ms, keys.changes_channel(), fingerprint],
            )
        except ResponseError as exc:
            text = str(exc).strip()
            if text == "NOTFOUND":
                raise NotFound(f"no alert has fingerprint {fingerprint!r}") from None
            if text.startswith("STATE "):
                raise FailedPrecondition(
                    f"alert {fingerprint} is {text[6:]}; only a firing alert can be acknowledged"
                ) from None
            raise
        alert = await self.get(fingerprint)
        if alert is None:
            raise NotFound(f"no alert has fingerprint {fingerprint!r}")
        return alert

    async def get(self, fingerprint: str) -> Alert | None:
        """One alert, if it exists."""
        raw = await self._redis.hgetall(keys.alert_key(fingerprint))
        return alert_from_hash(cast(dict[str, str], raw)) if raw else None

    async def get_many(self, fingerprints: Iterable[str]) -> list[Alert]:
        """The alerts that still exist among ``fingerprints``, in order."""
        pipe = self._redis.pipeline(transaction=False)
        for fp in fingerprints:
            pipe.hgetall(keys.alert_key(fp))
        return [alert_from_hash(raw) for raw in await pipe.execute() if raw]

    async def fingerprints(self, state: AlertState) -> list[str]:
        """Fingerprints of the firing or of the resolved alerts."""
        key = keys.firing_key() if state is AlertState.FIRING else keys.resolved_key()
        return [str(fp) for fp in await self._redis.zrange(key, 0, -1)]

    async def all_of(self, state: AlertState) -> list[Alert]:
        """Every firing, or every retained resolved, alert."""
        return await self.get_many(await self.fingerprints(state))

    async def next_expiry_ms(self) -> int | None:
        """When the earliest firing alert resolves unless re-fired."""
        first = await self._redis.zrange(keys.firing_key(), 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    async def count(self, state: AlertState) -> int:
        """How many alerts are firing, or resolved and retained."""
        key = keys.firing_key() if state is AlertState.FIRING else keys.resolved_key()
        return int(await self._redis.zcard(key))

    async def stats(self) -> dict[str, int]:
        """Service counters: ``events_received``, ``rate_limited``."""
        raw = cast(dict[str, str], await self._redis.hgetall(keys.stats_key()))
        return {name: int(value) for name, value in raw.items()}


def _ingested(fingerprint: str, reply: list[object]) -> Ingested:
    state, count, changed = str(reply[0]), int(str(reply[1])), bool(int(str(reply[2])))
    if state == "rate_limited":
        return Ingested(fingerprint, None, 0, changed=False, rate_limited=True)
    return Ingested(fingerprint, AlertState(state) if state != "unknown" else None, count, changed)
