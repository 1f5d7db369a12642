"""Protobuf ↔ domain conversions of the alerting API (the RPC edge's vocabulary)."""

from __future__ import annotations

from fedmesh.errors import InvalidArgument
from fedmesh.proto.alerting.v1 import alerting_pb2 as pb
from fedmesh.services.alerting.board import AlertingStatus, AlertView, Standing
from fedmesh.services.alerting.matchers import Matcher, MatchOp, make_matcher
from fedmesh.services.alerting.model import AnomalyReport, Event, Severity
from fedmesh.services.alerting.silences import Silence

_STANDING_TO_PB = {
    Standing.FIRING: pb.ALERT_STATE_FIRING,
    Standing.SUPPRESSED: pb.ALERT_STATE_SUPPRESSED,
    Standing.RESOLVED: pb.ALERT_STATE_RESOLVED,
}
_STANDING_FROM_PB = {v: k for k, v in _STANDING_TO_PB.items()}
_SEVERITIES = ", ".join(pb.Severity.Name(pb.Severity.ValueType(int(s))) for s in Severity)


def severity_from_pb(value: int, field: str) -> Severity | None:
    """None for UNSPECIFIED; InvalidArgument for a number outside the scale."""
    if value == pb.SEVERITY_UNSPECIFIED:
        return None
    try:
        return Severity(value)
    except ValueError:
        raise InvalidArgument(
            f"{field} {value} is not a known severity; expected {_SEVERITIES}"
        ) from None


def standing_from_pb(value: int) -> Standing | None:
    """None for UNSPECIFIED (any state); InvalidArgument for an unknown state."""
    if value == pb.ALERT_STATE_UNSPECIFIED:
        return None
    if value not in _STANDING_FROM_PB:
        raise InvalidArgument(
            f"state {value} is not a known alert state; expected ALERT_STATE_FIRING, "
            "ALERT_STATE_SUPPRESSED or ALERT_STATE_RESOLVED"
        )
    return _STANDING_FROM_PB[pb.AlertState.ValueType(value)]


def event_from_pb(event: pb.Event) -> Event:
    """The domain event; time 0 means now."""
    return Event(
        kind=event.kind,
        source=event.source,
        labels=dict(event.labels),
        annotations=dict(event.annotations),
        severity=severity_from_pb(event.severity, "event.severity"),
        time_unix_ms=event.time_unix_ms or None,
        resolve=event.resolve,
    )


def report_from_pb(request: pb.ReportAnomalyRequest) -> AnomalyReport:
    """The domain anomaly report; time 0 means now."""
    return AnomalyReport(
        node_id=request.node_id,
        score=request.score,
        features=dict(request.features),
        model_name=request.model_name,
        model_version=request.model_version,
        region=request.region,
        time_unix_ms=request.time_unix_ms or None,
    )


def matcher_from_pb(matcher: pb.Matcher) -> Matcher:
    """A validated matcher."""
    op = MatchOp.of(is_regex=matcher.is_regex, is_equal=matcher.is_equal)
    return make_matcher(matcher.name, op, matcher.value)


def matcher_to_pb(matcher: Matcher) -> pb.Matcher:
    """The wire matcher."""
    return pb.Matcher(
        name=matcher.name,
        value=matcher.value,
        is_regex=matcher.op.is_regex,
        is_equal=matcher.op.is_equal,
    )


def alert_to_pb(view: AlertView) -> pb.Alert:
    """The wire alert, with its standing and what mutes it."""
    alert = view.alert
    return pb.Alert(
        fingerprint=alert.fingerprint,
        name=alert.name,
        labels=dict(alert.labels),
        annotations=dict(alert.annotations),
        severity=pb.Severity.ValueType(int(alert.severity)),
        state=_STANDING_TO_PB[view.standing],
        starts_unix_ms=alert.starts_unix_ms,
        ends_unix_ms=alert.ends_unix_ms,
        updated_unix_ms=alert.updated_unix_ms,
        count=alert.count,
        group_key=alert.group_key,
        acknowledged=bool(alert.acknowledged_by),
        silenced_by=list(view.mute.silenced_by),
        inhibited_by=list(view.mute.inhibited_by),
        source=alert.source,
        acknowledged_by=alert.acknowledged_by,
        acknowledged_unix_ms=alert.acknowledged_unix_ms,
    )


def silence_to_pb(silence: Silence, now_ms: int) -> pb.Silence:
    """The wire silence; ``expired`` once its end has passed."""
    return pb.Silence(
        id=silence.id,
        matchers=[matcher_to_pb(m) for m in silence.matchers],
        starts_unix_ms=silence.starts_unix_ms,
        ends_unix_ms=silence.ends_unix_ms,
        created_by=silence.created_by,
        comment=silence.comment,
        expired=silence.ends_unix_ms <= now_ms,
    )


def status_to_pb(status: AlertingStatus) -> pb.GetStatusResponse:
    """The wire status."""
    return pb.GetStatusResponse(
        firing=status.firing,
        resolved=status.resolved,
        silences=status.silences,
        sinks=[
            pb.SinkStatus(
                name=sink.name,
                healthy=sink.healthy,
                delivered=sink.counters.delivered,
                failed=sink.counters.failed,
                last_error=sink.counters.last_error,
                queued=sink.counters.queued,
                given_up=sink.counters.given_up,
                consecutive_failures=sink.counters.consecutive_failures,
                target=sink.target,
                next_attempt_unix_ms=sink.counters.next_attempt_unix_ms,
            )
            for sink in status.sinks
        ],
        events_received=status.events_received,
        suppressed=status.suppressed,
        groups=status.groups,
        rules_source=status.rules_source,
        rate_limited=status.rate_limited,
    )
