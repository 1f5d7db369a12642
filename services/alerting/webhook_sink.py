"""A generic JSON webhook in Alertmanager's webhook format (version 4), plus our fields.

Receivers that understand Alertmanager webhooks work unchanged; ``notificationId``
(also sent as the ``Idempotency-Key`` header) lets a receiver drop a redelivery.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from fedmesh.services.alerting.model import AlertState
from fedmesh.services.alerting.notification import Notification, NotifiedAlert
from fedmesh.services.alerting.sinks import post_json, redact_url, rfc3339

ZERO_TIME = "0001-01-01T00:00:00Z"
"""Alertmanager's ``endsAt`` of a firing alert in webhooks."""


def _common(maps: list[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def webhook_alert(alert: NotifiedAlert, external_url: str) -> dict[str, Any]:
    """One alert of the payload."""
    firing = alert.status is AlertState.FIRING
    return {
        "status": alert.status.value,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": rfc3339(alert.starts_unix_ms),
        "endsAt": ZERO_TIME if firing else rfc3339(alert.ends_unix_ms),
        "generatorURL": f"{external_url}/alerts/{alert.fingerprint}",
        "fingerprint": alert.fingerprint,
        "severity": alert.severity.label,
        "count": alert.count,
        "source": alert.source,
        "acknowledgedBy": alert.acknowledged_by,
    }


def webhook_payload(notification: Notification, external_url: str) -> dict[str, Any]:
    """The whole JSON body of one notification."""
    return {
        "version": "4",
        "notificationId": notification.id,
        "groupKey": notification.group_key,
        "truncatedAlerts": 0,
        "status": notification.status.value,
        "receiver": notification.receiver,
        "groupLabels": dict(notification.group_labels),
        "commonLabels": _common([a.labels for a in notification.alerts]),
        "commonAnnotations": _common([a.annotations for a in notification.alerts]),
        "externalURL": external_url,
        "alerts": [webhook_alert(a, external_url) for a in notification.alerts],
    }


class WebhookSink:
    """POSTs each notification to a URL, with an optional bearer token."""

    def __init__(
        self, url: str, client: httpx.AsyncClient, external_url: str, token: str | None = None
    ) -> None:
        self._url = url
        self._client = client
        self._external_url = external_url.rstrip("/")
        self._token = token

    @property
    def name(self) -> str:
        """``webhook``."""
        return "webhook"

    @property
    def target(self) -> str:
        """The URL, redacted."""
        return redact_url(self._url)

    async def send(self, notification: Notification) -> None:
        """POST the payload."""
        headers = {"Idempotency-Key": notification.id}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        await post_json(
            self._client, self._url, webhook_payload(notification, self._external_url), headers
        )
