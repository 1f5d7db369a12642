"""Raises a critical ``model_tampered`` event on the alerting service when tampering is found.

The alert is best effort with a short deadline (``EventEmitter``): verification reports
DATA_LOSS to its caller whether or not alerting answers.
"""

from __future__ import annotations

from fedmesh.client.alerting import EventEmitter, Severity
from fedmesh.services.registry.chain import Tampering

EVENT_KIND = "model_tampered"


class AlertingAlarm:
    """Emits one alerting event per tampering found."""

    def __init__(self, events: EventEmitter) -> None:
        self._events = events

    async def raise_alarm(self, tampering: Tampering) -> None:
        """Send the event; the emitter logs and carries on when alerting is down or slow."""
        await self._events.emit(
            EVENT_KIND,
            {"model": tampering.name, "version": str(tampering.version)},
            {"summary": str(tampering)},
            severity=Severity.CRITICAL,
        )
