"""The way in: events and anomaly reports become alert changes (validated, deduplicated)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fedmesh.errors import InvalidArgument, ResourceExhausted
from fedmesh.services.alerting.alert_store import Ingested
from fedmesh.services.alerting.batcher import IngestBatcher
from fedmesh.services.alerting.clock import Clock
from fedmesh.services.alerting.drafts import AlertDraft, Drafter
from fedmesh.services.alerting.metrics import AlertingMetrics
from fedmesh.services.alerting.model import AnomalyReport, Event, Severity

MAX_BATCH = 1000


@dataclass(frozen=True)
class AnomalyOutcome:
    """What a report did: the alert it fired (if its score is in a band) and the band."""

    fingerprint: str
    severity: Severity | None
    alerted: bool


def _rate_limited(draft: AlertDraft) -> ResourceExhausted:
    return ResourceExhausted(
        f"alert {draft.name} may open at most {draft.max_new_per_minute} new alerts per minute; "
        f"{draft.fingerprint} was not opened (re-fires of open alerts are never limited)"
    )


def _identity(event: Event) -> tuple[object, ...]:
    return (
        event.kind,
        event.source,
        tuple(sorted(event.labels.items())),
        tuple(sorted(event.annotations.items())),
        event.severity,
        event.time_unix_ms,
        event.resolve,
    )


class Intake:
    """Applies the rules to what services and nodes report; concurrent calls share round trips."""

    def __init__(
        self,
        drafter: Drafter,
        batcher: IngestBatcher,
        clock: Clock,
        metrics: AlertingMetrics,
        on_change: Callable[[], None],
    ) -> None:
        self._drafter = drafter
        self._batcher = batcher
        self._clock = clock
        self._metrics = metrics
        self._on_change = on_change

    def _counted(self, kind: str, result: Ingested) -> Ingested:
        outcome = "rate_limited" if result.rate_limited else "new" if result.changed else "merged"
        self._metrics.events.labels(kind, outcome).inc()
        if result.changed:
            self._on_change()
        return result

    async def emit(self, event: Event) -> Ingested:
        """Fire, re-fire or resolve the alert of ``event``.

        InvalidArgument for a malformed event; ResourceExhausted when it would
        open a new alert over its rule's rate limit.
        """
        now = self._clock()
        draft = self._drafter.from_event(event, now)
        [ingested] = await self._batcher.ingest([draft])
        result = self._counted(event.kind, ingested)
        if result.rate_limited:
            raise _rate_limited(draft)
        return result

    async def emit_batch(self, events: Sequence[Event]) -> list[Ingested]:
        """Apply many events in order; all are validated before any is stored.

        Identical events are drafted once (a storm arrives as many copies of one).
        """
        if len(events) > MAX_BATCH:
            raise ResourceExhausted(
                f"{len(events)} events in one batch; at most {MAX_BATCH} are accepted"
            )
        now = self._clock()
        drafted: dict[tuple[object, ...], AlertDraft] = {}
        drafts = []
        for index, event in enumerate(events):
            identity = _identity(event)
            if identity not in drafted:
                try:
                    drafted[identity] = self._drafter.from_event(event, now)
                except InvalidArgument as exc:
                    raise InvalidArgument(f"event {index} ({event.kind!r}): {exc}") from None
            drafts.append(drafted[identity])
        results = await self._batcher.ingest(drafts)
        return [self._counted(e.kind, r) for e, r in zip(events, results, strict=True)]

    async def report_anomaly(self, report: AnomalyReport) -> AnomalyOutcome:
        """Fire the node's alert of the score's band, or resolve its alerts below every band."""
        now = self._clock()
        severity, drafts = self._drafter.from_anomaly(report, now)
        results = await self._batcher.ingest(drafts, [i == 0 for i in range(len(drafts))])
        self._counted("anomaly", results[0])
        if any(r.changed for r in results[1:]):
            self._on_change()
        if severity is None:
            return AnomalyOutcome("", None, alerted=False)
        if results[0].rate_limited:
            raise _rate_limited(drafts[0])
        return AnomalyOutcome(results[0].fingerprint, severity, alerted=True)
