"""Reads: alerts with their muting, and the service's status."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from fedmesh.services.alerting.alert_store import AlertStore
from fedmesh.services.alerting.clock import Clock
from fedmesh.services.alerting.courier import RetryPolicy
from fedmesh.services.alerting.model import Alert, AlertState, Mute, Severity
from fedmesh.services.alerting.mutes import MuteBook
from fedmesh.services.alerting.notifier import Notifier
from fedmesh.services.alerting.outbox import Outbox, SinkCounters
from fedmesh.services.alerting.rulebook import RuleBook
from fedmesh.services.alerting.silences import SilenceStore
from fedmesh.services.alerting.sinks import Sink


class Standing(StrEnum):
    """An alert as an operator sees it: firing, suppressed (muted while firing), resolved."""

    FIRING = "firing"
    SUPPRESSED = "suppressed"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class AlertView:
    """An alert and what mutes it."""

    alert: Alert
    mute: Mute

    @property
    def standing(self) -> Standing:
        """Firing, suppressed or resolved."""
        if not self.alert.firing:
            return Standing.RESOLVED
        return Standing.SUPPRESSED if self.mute.muted else Standing.FIRING


@dataclass(frozen=True)
class SinkHealth:
    """A sink's delivery record and whether it is healthy."""

    name: str
    target: str
    healthy: bool
    counters: SinkCounters


@dataclass(frozen=True)
class AlertingStatus:
    """The real state of the service."""

    firing: int
    suppressed: int
    resolved: int
    silences: int
    groups: int
    events_received: int
    rate_limited: int
    rules_source: str
    sinks: tuple[SinkHealth, ...]


def _sort_key(view: AlertView) -> tuple[int, int, str]:
    return (-int(view.alert.severity), -view.alert.starts_unix_ms, view.alert.fingerprint)


class AlertBoard:
    """Answers ListAlerts, WatchAlerts (per change) and GetStatus."""

    def __init__(
        self,
        rulebook: RuleBook,
        alerts: AlertStore,
        silences: SilenceStore,
        outbox: Outbox,
        sinks: Sequence[Sink],
        policy: RetryPolicy,
        clock: Clock,
        notifier: Notifier,
    ) -> None:
        self._rules = rulebook
        self._alerts = alerts
        self._silences = silences
        self._outbox = outbox
        self._sinks = tuple(sinks)
        self._policy = policy
        self._clock = clock
        self._notifier = notifier

    async def _mutes(self) -> MuteBook:
        now = self._clock()
        return MuteBook(
            await self._silences.active(now),
            self._rules.inhibit_rules,
            await self._alerts.inhibition_sources(),
            now,
        )

    async def list_alerts(
        self,
        standing: Standing | None = None,
        min_severity: Severity | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[AlertView]:
        """Alerts, worst and newest first, filtered by standing, severity and exact labels."""
        mutes = await self._mutes()
        alerts: list[Alert] = []
        if standing in (None, Standing.FIRING, Standing.SUPPRESSED):
            alerts.extend(await self._alerts.all_of(AlertState.FIRING))
        if standing in (None, Standing.RESOLVED):
            alerts.extend(await self._alerts.all_of(AlertState.RESOLVED))
        views = [AlertView(a, mutes.mute(a)) for a in alerts]
        wanted = dict(labels or {})
        return sorted(
            (
                v
                for v in views
                if (standing is None or v.standing is standing)
                and (min_severity is None or v.alert.severity >= min_severity)
                and all(v.alert.labels.get(k) == val for k, val in wanted.items())
            ),
            key=_sort_key,
        )

    async def views(self, fingerprints: Iterable[str]) -> list[AlertView]:
        """The current view of each alert that still exists."""
        alerts = await self._alerts.get_many(fingerprints)
        if not alerts:
            return []
        mutes = await self._mutes()
        return [AlertView(a, mutes.mute(a)) for a in alerts]

    async def status(self) -> AlertingStatus:
        """Counts, sinks and where the rules came from."""
        mutes = await self._mutes()
        firing = await self._alerts.all_of(AlertState.FIRING)
        suppressed = sum(1 for a in firing if mutes.mute(a).muted)
        stats = await self._alerts.stats()
        sinks = []
        for sink in self._sinks:
            counters = await self._outbox.counters(sink.name)
            healthy = counters.consecutive_failures < self._policy.unhealthy_after
            sinks.append(SinkHealth(sink.name, sink.target, healthy, counters))
        return AlertingStatus(
            firing=len(firing) - suppressed,
            suppressed=suppressed,
            resolved=await self._alerts.count(AlertState.RESOLVED),
            silences=len(await self._silences.active(self._clock())),
            groups=await self._notifier.group_count(),
            events_received=stats.get("events_received", 0),
            rate_limited=stats.get("rate_limited", 0),
            rules_source=self._rules.source,
            sinks=tuple(sinks),
        )
