"""Typed async client of the alerting service, and the best-effort emitter services use.

``AlertingClient`` wraps every RPC with Python types; errors arrive as
``grpc.aio.AioRpcError`` with the service's status and message.
``EventEmitter`` is for services reporting events: it never raises, so a
service's own work never fails because alerting is down — it logs the failure
and counts it (``failed`` and the ``fedmesh_alerting_emit_failures`` metric).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import grpc
from prometheus_client import Counter

from fedmesh.proto.alerting.v1 import alerting_pb2 as pb
from fedmesh.proto.alerting.v1 import alerting_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

EMIT_TIMEOUT_S = 2.0
"""Deadline of one best-effort emit, retries included."""
WATCH_TIMEOUT_S = 86_400.0
"""Deadline of a watch stream; watch again after it."""

EMIT_FAILURES = Counter(
    "fedmesh_alerting_emit_failures",
    "Events a service could not deliver to the alerting service",
    ["source", "kind"],
)

_MATCHER = re.compile(r"^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)


class Severity(StrEnum):
    """The one severity scale (DESIGN §8)."""

    INFO = "info"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class AlertState(StrEnum):
    """Firing, suppressed (firing but silenced or inhibited), or resolved."""

    FIRING = "firing"
    SUPPRESSED = "suppressed"
    RESOLVED = "resolved"


_SEVERITY_TO_PB = {
    Severity.INFO: pb.SEVERITY_INFO,
    Severity.MEDIUM: pb.SEVERITY_MEDIUM,
    Severity.HIGH: pb.SEVERITY_HIGH,
    Severity.CRITICAL: pb.SEVERITY_CRITICAL,
}
_SEVERITY_FROM_PB = {v: k for k, v in _SEVERITY_TO_PB.items()}
_STATE_TO_PB = {
    AlertState.FIRING: pb.ALERT_STATE_FIRING,
    AlertState.SUPPRESSED: pb.ALERT_STATE_SUPPRESSED,
    AlertState.RESOLVED: pb.ALERT_STATE_RESOLVED,
}
_STATE_FROM_PB = {v: k for k, v in _STATE_TO_PB.items()}


@dataclass(frozen=True)
class Event:
    """One event for :meth:`AlertingClient.emit_batch`."""

    kind: str
    source: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    severity: Severity | None = None
    resolve: bool = False
    time_unix_ms: int = 0

    def to_pb(self) -> pb.Event:
        """The wire event."""
        return pb.Event(
            kind=self.kind,
            source=self.source,
            labels=dict(self.labels),
            annotations=dict(self.annotations),
            severity=_SEVERITY_TO_PB[self.severity] if self.severity else pb.SEVERITY_UNSPECIFIED,
            time_unix_ms=self.time_unix_ms,
            resolve=self.resolve,
        )


@dataclass(frozen=True)
class EmitResult:
    """What an event did: its alert, the alert's state and dedup count."""

    fingerprint: str
    state: AlertState | None
    count: int
    rate_limited: bool = False


@dataclass(frozen=True)
class AnomalyResult:
    """What an anomaly report did: the alert it fired and its severity, if any."""

    fingerprint: str
    severity: Severity | None
    alerted: bool


@dataclass(frozen=True)
class Alert:
    """An alert as the service shows it."""

    fingerprint: str
    name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    severity: Severity
    state: AlertState
    starts_unix_ms: int
    ends_unix_ms: int
    updated_unix_ms: int
    count: int
    group_key: str
    source: str
    acknowledged_by: str
    acknowledged_unix_ms: int
    silenced_by: tuple[str, ...]
    inhibited_by: tuple[str, ...]

    @classmethod
    def from_pb(cls, alert: pb.Alert) -> Alert:
        """From the wire alert."""
        return cls(
            fingerprint=alert.fingerprint,
            name=alert.name,
            labels=dict(alert.labels),
            annotations=dict(alert.annotations),
            severity=_SEVERITY_FROM_PB[alert.severity],
            state=_STATE_FROM_PB[alert.state],
            starts_unix_ms=alert.starts_unix_ms,
            ends_unix_ms=alert.ends_unix_ms,
            updated_unix_ms=alert.updated_unix_ms,
            count=alert.count,
            group_key=alert.group_key,
            source=alert.source,
            acknowledged_by=alert.acknowledged_by,
            acknowledged_unix_ms=alert.acknowledged_unix_ms,
            silenced_by=tuple(alert.silenced_by),
            inhibited_by=tuple(alert.inhibited_by),
        )


@dataclass(frozen=True)
class Silence:
    """A silence; ``matchers`` in their text form (``alertname="NodeStale"``)."""

    id: str
    matchers: tuple[str, ...]
    starts_unix_ms: int
    ends_unix_ms: int
    created_by: str
    comment: str
    expired: bool

    @classmethod
    def from_pb(cls, silence: pb.Silence) -> Silence:
        """From the wire silence."""
        return cls(
            id=silence.id,
            matchers=tuple(format_matcher(m) for m in silence.matchers),
            starts_unix_ms=silence.starts_unix_ms,
            ends_unix_ms=silence.ends_unix_ms,
            created_by=silence.created_by,
            comment=silence.comment,
            expired=silence.expired,
        )


@dataclass(frozen=True)
class SinkStatus:
    """One sink's health and delivery record."""

    name: str
    target: str
    healthy: bool
    delivered: int
    failed: int
    given_up: int
    queued: int
    consecutive_failures: int
    last_error: str
    next_attempt_unix_ms: int


@dataclass(frozen=True)
class AlertingStatus:
    """The service's state: alert counts, silences, groups, sinks, rules."""

    firing: int
    suppressed: int
    resolved: int
    silences: int
    groups: int
    events_received: int
    rate_limited: int
    rules_source: str
    sinks: tuple[SinkStatus, ...]


def parse_matcher(text: str) -> pb.Matcher:
    """``name=value``, ``name!=value``, ``name=~regex`` or ``name!~regex`` (value may be quoted).

    ValueError when ``text`` has none of these shapes; the service validates the rest.
    """
    found = _MATCHER.match(text)
    if found is None:
        raise ValueError(
            f"malformed matcher {text!r}; expected name=value, name!=value, name=~regex "
            "or name!~regex"
        )
    name, op, value = found.groups()
    if value.startswith('"'):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            decoded = None
        if not isinstance(decoded, str):
            raise ValueError(f"malformed matcher {text!r}: unterminated double-quoted value")
        value = decoded
    return pb.Matcher(
        name=name, value=value, is_regex=op in ("=~", "!~"), is_equal=op in ("=", "=~")
    )


def format_matcher(matcher: pb.Matcher) -> str:
    """The text form of a wire matcher."""
    op = (
        ("=~" if matcher.is_equal else "!~")
        if matcher.is_regex
        else "="
        if matcher.is_equal
        else "!="
    )
    return f"{matcher.name}{op}{json.dumps(matcher.value, ensure_ascii=False)}"


def _state_of(value: pb.AlertState.ValueType) -> AlertState | None:
    return _STATE_FROM_PB.get(value)


class AlertingClient:
    """Every alerting RPC, typed. Calls carry the channel's default deadline unless given one."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float | None = None) -> None:
        self._stub = pb_grpc.AlertingServiceStub(channel)
        self._timeout_s = timeout_s

    async def emit(
        self,
        kind: str,
        *,
        source: str,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        severity: Severity | None = None,
        resolve: bool = False,
        time_unix_ms: int = 0,
    ) -> EmitResult:
        """Fire, re-fire or (``resolve``) resolve the alert of one event."""
        event = Event(
            kind, source, labels or {}, annotations or {}, severity, resolve, time_unix_ms
        )
        reply = await self._stub.Emit(pb.EmitRequest(event=event.to_pb()), timeout=self._timeout_s)
        return EmitResult(reply.fingerprint, _state_of(reply.state), reply.count)

    async def emit_batch(self, events: Sequence[Event]) -> list[EmitResult]:
        """Many events in one call (at most 1000); none is stored when one is malformed."""
        reply = await self._stub.EmitBatch(
            pb.EmitBatchRequest(events=[e.to_pb() for e in events]), timeout=self._timeout_s
        )
        return [
            EmitResult(r.fingerprint, _state_of(r.state), r.count, r.rate_limited)
            for r in reply.results
        ]

    async def report_anomaly(
        self,
        node_id: str,
        score: float,
        features: Mapping[str, float],
        model_name: str,
        model_version: int,
        region: str = "",
        *,
        time_unix_ms: int = 0,
    ) -> AnomalyResult:
        """Report a node's anomaly score (≥0.9 critical, ≥0.7 high, ≥0.5 medium, below: none)."""
        reply = await self._stub.ReportAnomaly(
            pb.ReportAnomalyRequest(
                node_id=node_id,
                score=score,
                features=dict(features),
                model_name=model_name,
                model_version=model_version,
                time_unix_ms=time_unix_ms,
                region=region,
            ),
            timeout=self._timeout_s,
        )
        return AnomalyResult(
            reply.fingerprint, _SEVERITY_FROM_PB.get(reply.severity), reply.alerted
        )

    async def list_alerts(
        self,
        *,
        state: AlertState | None = None,
        min_severity: Severity | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[Alert]:
        """Alerts, worst and newest first, filtered by state, severity and exact labels."""
        reply = await self._stub.ListAlerts(
            pb.ListAlertsRequest(
                state=_STATE_TO_PB[state] if state else pb.ALERT_STATE_UNSPECIFIED,
                min_severity=_SEVERITY_TO_PB[min_severity]
                if min_severity
                else pb.SEVERITY_UNSPECIFIED,
                labels=dict(labels or {}),
            ),
            timeout=self._timeout_s,
        )
        return [Alert.from_pb(a) for a in reply.alerts]

    async def watch(
        self, *, min_severity: Severity | None = None, timeout_s: float = WATCH_TIMEOUT_S
    ) -> AsyncGenerator[Alert, None]:
        """The alerts firing now, then every change as it happens."""
        call = self._stub.WatchAlerts(
            pb.WatchAlertsRequest(
                min_severity=_SEVERITY_TO_PB[min_severity]
                if min_severity
                else pb.SEVERITY_UNSPECIFIED
            ),
            timeout=timeout_s,
        )
        try:
            async for reply in call:
                yield Alert.from_pb(reply.alert)
        finally:
            call.cancel()

    async def create_silence(
        self,
        matchers: Sequence[str | pb.Matcher],
        *,
        duration_s: float,
        created_by: str,
        comment: str = "",
    ) -> Silence:
        """Silence the alerts all ``matchers`` select for ``duration_s`` seconds."""
        wire = [parse_matcher(m) if isinstance(m, str) else m for m in matchers]
        reply = await self._stub.CreateSilence(
            pb.CreateSilenceRequest(
                matchers=wire, duration_s=duration_s, created_by=created_by, comment=comment
            ),
            timeout=self._timeout_s,
        )
        return Silence.from_pb(reply.silence)

    async def list_silences(self) -> list[Silence]:
        """Every retained silence, latest end first."""
        reply = await self._stub.ListSilences(pb.ListSilencesRequest(), timeout=self._timeout_s)
        return [Silence.from_pb(s) for s in reply.silences]

    async def expire_silence(self, silence_id: str) -> Silence:
        """End a silence now."""
        reply = await self._stub.ExpireSilence(
            pb.ExpireSilenceRequest(id=silence_id), timeout=self._timeout_s
        )
        return Silence.from_pb(reply.silence)

    async def acknowledge(self, fingerprint: str, *, by: str) -> Alert:
        """Record that ``by`` handles the firing alert ``fingerprint``."""
        reply = await self._stub.AcknowledgeAlert(
            pb.AcknowledgeAlertRequest(fingerprint=fingerprint, by=by), timeout=self._timeout_s
        )
        return Alert.from_pb(reply.alert)

    async def status(self) -> AlertingStatus:
        """Counts, sinks' health and the rule file in use."""
        reply = await self._stub.GetStatus(pb.GetStatusRequest(), timeout=self._timeout_s)
        return AlertingStatus(
            firing=reply.firing,
            suppressed=reply.suppressed,
            resolved=reply.resolved,
            silences=reply.silences,
            groups=reply.groups,
            events_received=reply.events_received,
            rate_limited=reply.rate_limited,
            rules_source=reply.rules_source,
            sinks=tuple(
                SinkStatus(
                    name=s.name,
                    target=s.target,
                    healthy=s.healthy,
                    delivered=s.delivered,
                    failed=s.failed,
                    given_up=s.given_up,
                    queued=s.queued,
                    consecutive_failures=s.consecutive_failures,
                    last_error=s.last_error,
                    next_attempt_unix_ms=s.next_attempt_unix_ms,
                )
                for s in reply.sinks
            ),
        )


class EventEmitter:
    """Best-effort events for a service: ``emit`` never raises and waits at most ``timeout_s``.

    ``channel`` None means alerting is not configured: events are dropped
    silently. A failure is logged (kind, status, message — never annotations)
    and counted in ``failed`` and in ``fedmesh_alerting_emit_failures``.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel | None,
        *,
        source: str,
        timeout_s: float = EMIT_TIMEOUT_S,
    ) -> None:
        self._client = AlertingClient(channel, timeout_s=timeout_s) if channel else None
        self._source = source
        self.sent = 0
        self.failed = 0

    async def emit(
        self,
        kind: str,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        resolve: bool = False,
        *,
        severity: Severity | None = None,
    ) -> None:
        """Send one event; on any failure log it, count it, and return."""
        if self._client is None:
            return
        try:
            await self._client.emit(
                kind,
                source=self._source,
                labels=labels,
                annotations=annotations,
                severity=severity,
                resolve=resolve,
            )
        except grpc.aio.AioRpcError as exc:
            self._failed(kind, exc.code().name, exc.details() or "")
        except Exception as exc:  # best effort: nothing may fail the caller's work
            self._failed(kind, type(exc).__name__, str(exc))
        else:
            self.sent += 1

    def _failed(self, kind: str, status: str, message: str) -> None:
        self.failed += 1
        EMIT_FAILURES.labels(self._source, kind).inc()
        log.warning(
            "could not send an event to alerting",
            extra={"fields": {"kind": kind, "status": status, "message": message}},
        )
