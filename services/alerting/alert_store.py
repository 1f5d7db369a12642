"""Alerts in Redis: fire, re-fire (dedup), resolve, expire, acknowledge, prune — each atomic.

One Lua script counts events, folds them into the alert their labels identify
(or opens the alert, within the rule's rate limit), schedules the alert's group,
and publishes the change. A run of identical events (same alert, same action)
is one call that adds its length to the count, and many calls share one
pipelined round trip.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from fedmesh.errors import FailedPrecondition, NotFound
from fedmesh.services.alerting import keys
from fedmesh.services.alerting.drafts import AlertDraft
from fedmesh.services.alerting.model import Alert, AlertState, Severity

RATE_WINDOW_MS = 60_000

# KEYS: alert, firing, resolved, group, group members, groups due, stats, rate counter,
#       inhibition sources.
# ARGV: mode, fp, now, events, annotations, source, resolve timeout, rate limit, channel,
#       group key prefix, and (to open an alert) name, labels, severity, starts, group key,
#       route path, group labels, group wait, whether it can inhibit ("1" or "0").
_INGEST = """
local now, events = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('HINCRBY', KEYS[7], 'events_received', events)
local state = redis.call('HGET', KEYS[1], 'state')
if ARGV[1] == 'resolve' then
  if state ~= 'firing' then
    return {state or 'unknown', tonumber(redis.call('HGET', KEYS[1], 'count') or '0'), 0}
  end
  redis.call('HSET', KEYS[1], 'state', 'resolved', 'ends_ms', now, 'updated_ms', now)
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('SREM', KEYS[9], ARGV[2])
  redis.call('ZADD', KEYS[3], now, ARGV[2])
  local group = ARGV[10] .. redis.call('HGET', KEYS[1], 'group_key')
  if redis.call('EXISTS', group) == 1 then redis.call('HINCRBY', group, 'version', 1) end
  redis.call('PUBLISH', ARGV[9], ARGV[2])
  return {'resolved', tonumber(redis.call('HGET', KEYS[1], 'count')), 1}
end
if state == 'firing' then
  local count = redis.call('HINCRBY', KEYS[1], 'count', events)
  redis.call('HSET', KEYS[1], 'updated_ms', now, 'annotations', ARGV[5], 'source', ARGV[6])
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[7]), ARGV[2])
  return {'firing', count, 0}
end
local limit = tonumber(ARGV[8])
if limit > 0 then
  local opened = redis.call('INCR', KEYS[8])
  if opened == 1 then redis.call('PEXPIRE', KEYS[8], 120000) end  -- two windows
  if opened > limit then
    redis.call('HINCRBY', KEYS[7], 'rate_limited', events)
    return {'rate_limited', 0, 0}
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[2], 'name', ARGV[11], 'labels', ARGV[12],
  'annotations', ARGV[5], 'severity', ARGV[13], 'state', 'firing', 'starts_ms', ARGV[14],
  'ends_ms', 0, 'updated_ms', now, 'count', math.max(events, 1), 'group_key', ARGV[15],
  'source', ARGV[6], 'resolve_timeout_ms', ARGV[7])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[7]), ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[5], ARGV[2])
if ARGV[19] == '1' then redis.call('SADD', KEYS[9], ARGV[2]) end
if redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('HSET', KEYS[4], 'key', ARGV[15], 'route', ARGV[16], 'labels', ARGV[17],
    'created_ms', now, 'last_notified_ms', 0, 'version', 0)
  redis.call('ZADD', KEYS[6], now + tonumber(ARGV[18]), ARGV[15])
end
redis.call('HINCRBY', KEYS[4], 'version', 1)
redis.call('PUBLISH', ARGV[9], ARGV[2])
return {'firing', math.max(events, 1), 1}
"""

# KEYS: firing, resolved, inhibition sources.
# ARGV: now, alert key prefix, group key prefix, channel, limit.
# An alert resolves at the time it expired (last event + resolve timeout), not at the sweep.
_EXPIRE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0,
  tonumber(ARGV[5]))
for i = 1, #due, 2 do
  local fp, ends = due[i], due[i + 1]
  local alert = ARGV[2] .. fp
  redis.call('HSET', alert, 'state', 'resolved', 'ends_ms', ends, 'updated_ms', ARGV[1])
  redis.call('ZREM', KEYS[1], fp)
  redis.call('SREM', KEYS[3], fp)
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
        self, draft: AlertDraft, now_ms: int, events: int
    ) -> tuple[list[str], list[str | int]]:
        args: list[str | int] = [
            "resolve" if draft.resolve else "fire",
            draft.fingerprint,
            now_ms,
            events,
            json.dumps(draft.annotations, sort_keys=True),
            draft.source,
            draft.resolve_timeout_ms,
            draft.max_new_per_minute,
            keys.changes_channel(),
            keys.group_key(""),
        ]
        if not draft.resolve:
            args += [
                draft.name,
                json.dumps(draft.labels, sort_keys=True),
                int(draft.severity),
                draft.starts_unix_ms,
                draft.group_key,
                draft.route.path,
                json.dumps(draft.group_labels, sort_keys=True),
                draft.route.group_wait_ms,
                "1" if draft.can_inhibit else "0",
            ]
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
                keys.inhibit_sources_key(),
            ],
            args,
        )

    async def ingest(self, draft: AlertDraft, now_ms: int) -> Ingested:
        """Apply one draft (one round trip)."""
        return (await self.ingest_many([draft], now_ms))[0]

    async def ingest_many(
        self,
        drafts: Sequence[AlertDraft],
        now_ms: int,
        counted: Sequence[bool] | None = None,
    ) -> list[Ingested]:
        """Apply drafts in order in one pipelined round trip; one result per draft.

        Consecutive drafts of the same alert and action are one script call.
        ``counted`` says which drafts are received events (an anomaly report
        below every band resolves several alerts as one event); all by default.
        """
        flags = list(counted) if counted is not None else [True] * len(drafts)
        runs = _runs(drafts)
        pipe = self._redis.pipeline(transaction=False)
        for start, length in runs:
            events = sum(flags[start : start + length])
            last = drafts[start + length - 1]
            script_keys, args = self._ingest_call(
                replace(last, starts_unix_ms=drafts[start].starts_unix_ms), now_ms, events
            )
            await self._ingest(keys=script_keys, args=args, client=pipe)
        replies = await pipe.execute()
        results: list[Ingested] = []
        for (start, length), reply in zip(runs, replies, strict=True):
            results += _expand(drafts[start].fingerprint, reply, length)
        return results

    async def expire(self, now_ms: int, limit: int = 500) -> int:
        """Resolve firing alerts not re-fired within their resolve timeout; how many."""
        return int(
            await self._expire(
                keys=[keys.firing_key(), keys.resolved_key(), keys.inhibit_sources_key()],
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

    async def inhibition_sources(self) -> list[Alert]:
        """The firing alerts that match some inhibition rule's source side."""
        fingerprints = await self._redis.smembers(keys.inhibit_sources_key())
        return [a for a in await self.get_many(sorted(map(str, fingerprints))) if a.firing]

    async def index_inhibition_sources(self, can_inhibit: Callable[[Alert], bool]) -> None:
        """Rebuild the source index for the rules in force (they may differ from the last run's)."""
        sources = [a.fingerprint for a in await self.all_of(AlertState.FIRING) if can_inhibit(a)]
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(keys.inhibit_sources_key())
        if sources:
            pipe.sadd(keys.inhibit_sources_key(), *sources)
        await pipe.execute()

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


def _runs(drafts: Sequence[AlertDraft]) -> list[tuple[int, int]]:
    """(start, length) of each run of consecutive drafts of the same alert and action."""
    runs: list[tuple[int, int]] = []
    for index, draft in enumerate(drafts):
        if runs:
            start, length = runs[-1]
            first = drafts[start]
            if (first.fingerprint, first.resolve) == (draft.fingerprint, draft.resolve):
                runs[-1] = (start, length + 1)
                continue
        runs.append((index, 1))
    return runs


def _expand(fingerprint: str, reply: list[object], length: int) -> list[Ingested]:
    """One result per event of a run from the script's reply for the whole run."""
    state, count, changed = str(reply[0]), int(str(reply[1])), bool(int(str(reply[2])))
    if state == "rate_limited":
        return [Ingested(fingerprint, None, 0, changed=False, rate_limited=True)] * length
    known = AlertState(state) if state != "unknown" else None
    if known is AlertState.FIRING:
        first = count - length + 1
        return [
            Ingested(fingerprint, known, first + i, changed=changed and i == 0)
            for i in range(length)
        ]
    return [Ingested(fingerprint, known, count, changed=changed and i == 0) for i in range(length)]
