"""Alertmanager v2: ``POST /api/v2/alerts`` (labels, annotations, startsAt, endsAt, generatorURL).

A firing alert is posted with an ``endsAt`` beyond the group's next repeat
(counted from the delivery, which may come late after an outage), so
Alertmanager keeps it firing until we say otherwise (as Prometheus does with
its resend horizon) yet resolves it by itself if this service disappears. A
resolved alert is posted with its real end, which ends it in Alertmanager.
"""

from __future__ import annotations

from typing import Any

import httpx

from fedmesh.services.alerting.clock import Clock
from fedmesh.services.alerting.model import AlertState
from fedmesh.services.alerting.notification import Notification, NotifiedAlert
from fedmesh.services.alerting.sinks import post_json, redact_url, rfc3339

HORIZON_SLACK_MS = 5 * 60_000
"""Added to the repeat interval, so a late repeat does not let the alert lapse."""


def postable_alert(
    alert: NotifiedAlert, notification: Notification, generator_url: str, now_ms: int
) -> dict[str, Any]:
    """One alert in the shape of Alertmanager's ``postableAlert``, delivered at ``now_ms``."""
    if alert.status is AlertState.FIRING:
        ends = now_ms + notification.repeat_interval_ms + HORIZON_SLACK_MS
    else:
        ends = alert.ends_unix_ms
    return {
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": rfc3339(alert.starts_unix_ms),
        "endsAt": rfc3339(ends),
        "generatorURL": generator_url,
    }


class AlertmanagerSink:
    """Posts each notification's alerts to an Alertmanager."""

    def __init__(
        self, url: str, client: httpx.AsyncClient, external_url: str, clock: Clock
    ) -> None:
        self._endpoint = url.rstrip("/") + "/api/v2/alerts"
        self._client = client
        self._external_url = external_url.rstrip("/")
        self._clock = clock

    @property
    def name(self) -> str:
        """``alertmanager``."""
        return "alertmanager"

    @property
    def target(self) -> str:
        """The API endpoint, redacted."""
        return redact_url(self._endpoint)

    async def send(self, notification: Notification) -> None:
        """POST the alerts (firing and resolved) in one request."""
        now = self._clock()
        payload = [
            postable_alert(a, notification, f"{self._external_url}/alerts/{a.fingerprint}", now)
            for a in notification.alerts
        ]
        await post_json(self._client, self._endpoint, payload)
