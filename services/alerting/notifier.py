"""Flushes due alert groups into the sinks' outboxes, atomically.

Each flush reads the group, decides with :func:`plan_flush`, and then, in one
WATCH/MULTI transaction, queues the notifications, records what was notified,
drops resolved alerts from the group and schedules the next flush. A concurrent
change to the group (a new or resolved alert bumps its version) aborts the
transaction and the flush is planned again, so nothing is sent twice or lost.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from fedmesh.services.alerting import keys
from fedmesh.services.alerting.alert_store import AlertStore
from fedmesh.services.alerting.grouping import plan_flush
from fedmesh.services.alerting.mutes import MuteBook
from fedmesh.services.alerting.notification import Notification, NotifiedAlert
from fedmesh.services.alerting.outbox import Outbox
from fedmesh.services.alerting.rulebook import RuleBook
from fedmesh.services.alerting.silences import SilenceStore

log = logging.getLogger(__name__)

MAX_FLUSH_ATTEMPTS = 10
DUE_BATCH = 200


class Notifier:
    """Turns due groups into notifications for the configured sinks."""

    def __init__(
        self,
        redis: aioredis.Redis,
        rulebook: RuleBook,
        alerts: AlertStore,
        silences: SilenceStore,
        sinks: Sequence[str],
        on_queued: Callable[[str], None],
    ) -> None:
        self._redis = redis
        self._rules = rulebook
        self._alerts = alerts
        self._silences = silences
        self._sinks = frozenset(sinks)
        self._on_queued = on_queued

    async def next_due_ms(self) -> int | None:
        """When the earliest group flush is due, if any group exists."""
        first = await self._redis.zrange(keys.groups_due_key(), 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    async def group_count(self) -> int:
        """How many groups exist (each has a flush scheduled)."""
        return int(await self._redis.zcard(keys.groups_due_key()))

    async def flush_due(self, now_ms: int) -> list[Notification]:
        """Flush every group due at ``now_ms``; the notifications queued."""
        due = await self._redis.zrangebyscore(
            keys.groups_due_key(), "-inf", now_ms, start=0, num=DUE_BATCH
        )
        if not due:
            return []
        mutes = MuteBook(
            await self._silences.active(now_ms),
            self._rules.inhibit_rules,
            await self._alerts.inhibition_sources(),
            now_ms,
        )
        queued: list[Notification] = []
        for group in due:
            queued.extend(await self._flush(str(group), now_ms, mutes))
        for sink in {n.receiver for n in queued}:
            self._on_queued(sink)
        return queued

    async def _flush(self, group: str, now_ms: int, mutes: MuteBook) -> list[Notification]:
        group_key = keys.group_key(group)
        members_key = keys.group_members_key(group)
        notified_key = keys.group_notified_key(group)
        for _ in range(MAX_FLUSH_ATTEMPTS):
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(group_key, members_key, notified_key)
                    fields = cast(dict[str, str], await pipe.hgetall(group_key))
                    if not fields:
                        _begin(pipe)
                        pipe.zrem(keys.groups_due_key(), group)
                        await pipe.execute()
                        return []
                    members = {str(m) for m in await pipe.smembers(members_key)}
                    notified = {str(m) for m in await pipe.smembers(notified_key)}
                    alerts = await self._alerts.get_many(sorted(members))
                    route = self._rules.route.find(fields["route"]) or self._rules.route
                    plan = plan_flush(
                        alerts,
                        {a.fingerprint: mutes.mute(a) for a in alerts},
                        notified,
                        int(fields["last_notified_ms"]),
                        now_ms,
                        route.repeat_interval_ms,
                    )
                    # Members whose alert hash is gone (pruned) leave with the resolved ones.
                    leaving = plan.leaving | (members - {a.fingerprint for a in alerts})
                    notifications = []
                    if plan.notify:
                        sent = tuple(NotifiedAlert.of(a) for a in (*plan.firing, *plan.resolved))
                        notifications = [
                            Notification(
                                id=str(uuid.uuid4()),
                                receiver=receiver,
                                group_key=group,
                                group_labels=_json_labels(fields["labels"]),
                                alerts=sent,
                                created_unix_ms=now_ms,
                                repeat_interval_ms=route.repeat_interval_ms,
                            )
                            for receiver in route.receivers
                            if receiver in self._sinks
                        ]
                    _begin(pipe)
                    for notification in notifications:
                        Outbox.enqueue(pipe, notification)
                    if plan.notify:
                        pipe.hset(group_key, "last_notified_ms", now_ms)
                    pipe.delete(notified_key)
                    if plan.notified:
                        pipe.sadd(notified_key, *plan.notified)
                    if leaving:
                        pipe.srem(members_key, *leaving)
                    if members - leaving:
                        pipe.zadd(keys.groups_due_key(), {group: now_ms + route.group_interval_ms})
                    else:
                        pipe.delete(group_key, members_key, notified_key)
                        pipe.zrem(keys.groups_due_key(), group)
                    await pipe.execute()
                    return notifications
                except WatchError:
                    continue
        log.warning(
            "alert group kept changing during its flush; retrying at the next tick",
            extra={"fields": {"group": group}},
        )
        return []


def _begin(pipe: Pipeline) -> None:
    """Start the MULTI block after the watched reads (redis-py leaves ``multi`` untyped)."""
    pipe.multi()  # type: ignore[no-untyped-call]


def _json_labels(raw: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in json.loads(raw).items()}
