"""The RPC edge of the alerting service: translate, validate, authorize, delegate.

With mTLS, callers are known by their SPIFFE IDs, matched exactly: a node
reports anomalies only as itself, a service emits events only under its own
name, and silences and acknowledgements come from an admin whose name is the
one recorded. Reads are open to every authenticated caller.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import grpc

from fedmesh.errors import InvalidArgument, PermissionDenied, Unauthenticated
from fedmesh.proto.alerting.v1 import alerting_pb2 as pb
from fedmesh.proto.alerting.v1 import alerting_pb2_grpc as pb_grpc
from fedmesh.rpc import translate_errors
from fedmesh.rpc.authorization import CallerPolicy
from fedmesh.rpc.certs import spiffe_id
from fedmesh.rpc.identity import peer_identity, require_identity
from fedmesh.services.alerting import wire
from fedmesh.services.alerting.alert_store import AlertStore, Ingested
from fedmesh.services.alerting.board import AlertBoard, AlertView, Standing
from fedmesh.services.alerting.clock import Clock
from fedmesh.services.alerting.feed import AlertFeed
from fedmesh.services.alerting.intake import Intake
from fedmesh.services.alerting.model import AlertState, Severity
from fedmesh.services.alerting.silences import SilenceStore

_FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")
_MAX_ACTOR_CHARS = 128
WATCH_POLL_S = 1.0
"""How often a quiet watch checks that its caller is still there."""

Context = grpc.aio.ServicerContext


def _state(result: Ingested) -> pb.AlertState.ValueType:
    if result.state is None:
        return pb.ALERT_STATE_UNSPECIFIED
    return pb.ALERT_STATE_FIRING if result.state is AlertState.FIRING else pb.ALERT_STATE_RESOLVED


def _at_least(view: AlertView, severity: Severity | None) -> bool:
    return severity is None or view.alert.severity >= severity


class AlertingServicer(pb_grpc.AlertingServiceServicer):
    """AlertingService over the intake, the board, the silences and the feed."""

    def __init__(
        self,
        intake: Intake,
        board: AlertBoard,
        alerts: AlertStore,
        silences: SilenceStore,
        feed: AlertFeed,
        clock: Clock,
        *,
        tls_required: bool,
    ) -> None:
        self._intake = intake
        self._board = board
        self._alerts = alerts
        self._silences = silences
        self._feed = feed
        self._clock = clock
        self._tls_required = tls_required
        self._callers = CallerPolicy(tls_required=tls_required)

    def _emitting(self, context: Context[Any, Any], sources: set[str]) -> None:
        """Refuse events unless each names the calling service as its source (under mTLS)."""
        if not (self._tls_required or peer_identity(context) is not None):
            return
        if "" in sources:
            raise InvalidArgument(
                "event.source is empty; with mTLS an event must name the service that emits "
                "it, and the caller must be that service"
            )
        for source in sorted(sources):
            self._callers.acting_as(context, "service", source)

    def _admin(self, context: Context[Any, Any]) -> str | None:
        """The calling admin's name; None in the dev profile without mTLS."""
        identity = peer_identity(context)
        if identity is None:
            if self._tls_required:
                raise Unauthenticated("this call needs a client certificate with a SPIFFE ID")
            return None
        name = identity.rpartition("/")[2]
        require_identity(context, spiffe_id("admin", name), tls_required=self._tls_required)
        return name

    def _as_admin(self, context: Context[Any, Any], claimed: str, field: str) -> None:
        """Refuse unless an admin calls and ``claimed`` (the recorded author) is that admin."""
        admin = self._admin(context)
        if admin is not None and claimed != admin:
            raise PermissionDenied(f"{field} is {claimed!r} but the caller is admin {admin!r}")

    @translate_errors
    async def Emit(
        self, request: pb.EmitRequest, context: Context[pb.EmitRequest, pb.EmitResponse]
    ) -> pb.EmitResponse:
        """Fire, re-fire or resolve the alert of one event."""
        if not request.HasField("event"):
            raise InvalidArgument("event is required")
        event = wire.event_from_pb(request.event)
        self._emitting(context, {event.source})
        result = await self._intake.emit(event)
        return pb.EmitResponse(
            fingerprint=result.fingerprint, state=_state(result), count=result.count
        )

    @translate_errors
    async def EmitBatch(
        self,
        request: pb.EmitBatchRequest,
        context: Context[pb.EmitBatchRequest, pb.EmitBatchResponse],
    ) -> pb.EmitBatchResponse:
        """Apply many events; none is stored when one is malformed."""
        events = []
        for index, event in enumerate(request.events):
            try:
                events.append(wire.event_from_pb(event))
            except InvalidArgument as exc:
                raise InvalidArgument(f"event {index} ({event.kind!r}): {exc}") from None
        self._emitting(context, {e.source for e in events})
        results = await self._intake.emit_batch(events)
        return pb.EmitBatchResponse(
            results=[
                pb.EmitResult(
                    fingerprint=r.fingerprint,
                    state=_state(r),
                    count=r.count,
                    rate_limited=r.rate_limited,
                )
                for r in results
            ]
        )

    @translate_errors
    async def ReportAnomaly(
        self,
        request: pb.ReportAnomalyRequest,
        context: Context[pb.ReportAnomalyRequest, pb.ReportAnomalyResponse],
    ) -> pb.ReportAnomalyResponse:
        """Fire the node's alert of the score's band (or resolve it below every band)."""
        if request.node_id:
            self._callers.acting_as(context, "node", request.node_id)
        outcome = await self._intake.report_anomaly(wire.report_from_pb(request))
        return pb.ReportAnomalyResponse(
            fingerprint=outcome.fingerprint,
            severity=pb.Severity.ValueType(int(outcome.severity or 0)),
            alerted=outcome.alerted,
        )

    @translate_errors
    async def ListAlerts(
        self,
        request: pb.ListAlertsRequest,
        context: Context[pb.ListAlertsRequest, pb.ListAlertsResponse],
    ) -> pb.ListAlertsResponse:
        """Alerts filtered by state, minimum severity and exact labels."""
        self._callers.authenticated(context)
        views = await self._board.list_alerts(
            wire.standing_from_pb(request.state),
            wire.severity_from_pb(request.min_severity, "min_severity"),
            dict(request.labels),
        )
        return pb.ListAlertsResponse(alerts=[wire.alert_to_pb(v) for v in views])

    @translate_errors
    async def WatchAlerts(
        self,
        request: pb.WatchAlertsRequest,
        context: Context[pb.WatchAlertsRequest, pb.WatchAlertsResponse],
    ) -> AsyncIterator[pb.WatchAlertsResponse]:
        """The alerts firing now, then every change as it happens."""
        self._callers.authenticated(context)
        minimum = wire.severity_from_pb(request.min_severity, "min_severity")
        async with self._feed.subscribe() as subscription:
            for view in await self._board.list_alerts(min_severity=minimum):
                if view.standing is not Standing.RESOLVED:
                    yield pb.WatchAlertsResponse(alert=wire.alert_to_pb(view))
            while not context.done():
                changed = await subscription.next_batch(WATCH_POLL_S)
                for view in await self._board.views(changed) if changed else []:
                    if _at_least(view, minimum):
                        yield pb.WatchAlertsResponse(alert=wire.alert_to_pb(view))

    @translate_errors
    async def CreateSilence(
        self,
        request: pb.CreateSilenceRequest,
        context: Context[pb.CreateSilenceRequest, pb.CreateSilenceResponse],
    ) -> pb.CreateSilenceResponse:
        """Mute the alerts the matchers select for ``duration_s``."""
        matchers = [wire.matcher_from_pb(m) for m in request.matchers]
        self._as_admin(context, request.created_by, "created_by")
        now = self._clock()
        silence = await self._silences.create(
            matchers, request.duration_s, request.created_by, request.comment, now
        )
        return pb.CreateSilenceResponse(silence=wire.silence_to_pb(silence, now))

    @translate_errors
    async def ListSilences(
        self,
        request: pb.ListSilencesRequest,
        context: Context[pb.ListSilencesRequest, pb.ListSilencesResponse],
    ) -> pb.ListSilencesResponse:
        """Every retained silence, active and expired, latest end first."""
        self._callers.authenticated(context)
        now = self._clock()
        silences = await self._silences.all()
        return pb.ListSilencesResponse(silences=[wire.silence_to_pb(s, now) for s in silences])

    @translate_errors
    async def ExpireSilence(
        self,
        request: pb.ExpireSilenceRequest,
        context: Context[pb.ExpireSilenceRequest, pb.ExpireSilenceResponse],
    ) -> pb.ExpireSilenceResponse:
        """End a silence now."""
        if not request.id:
            raise InvalidArgument("id is required (the silence to expire)")
        self._admin(context)
        now = self._clock()
        silence = await self._silences.expire(request.id, now)
        return pb.ExpireSilenceResponse(silence=wire.silence_to_pb(silence, now))

    @translate_errors
    async def AcknowledgeAlert(
        self,
        request: pb.AcknowledgeAlertRequest,
        context: Context[pb.AcknowledgeAlertRequest, pb.AcknowledgeAlertResponse],
    ) -> pb.AcknowledgeAlertResponse:
        """Record who handles a firing alert."""
        if not _FINGERPRINT.match(request.fingerprint):
            raise InvalidArgument(
                f"fingerprint {request.fingerprint[:40]!r} is malformed; expected 16 lowercase "
                "hexadecimal digits"
            )
        if not request.by or len(request.by) > _MAX_ACTOR_CHARS:
            raise InvalidArgument(
                f"by is required (who acknowledges), at most {_MAX_ACTOR_CHARS} characters"
            )
        self._as_admin(context, request.by, "by")
        await self._alerts.acknowledge(request.fingerprint, request.by, self._clock())
        views = await self._board.views([request.fingerprint])
        return pb.AcknowledgeAlertResponse(alert=wire.alert_to_pb(views[0]))

    @translate_errors
    async def GetStatus(
        self,
        request: pb.GetStatusRequest,
        context: Context[pb.GetStatusRequest, pb.GetStatusResponse],
    ) -> pb.GetStatusResponse:
        """Counts, sinks' health and the rule file in use."""
        self._callers.authenticated(context)
        return wire.status_to_pb(await self._board.status())
