"""A notification: what one group tells one sink at one flush (stored in the outbox as JSON)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedmesh.services.alerting.model import Alert, AlertState, Severity


@dataclass(frozen=True)
class NotifiedAlert:
    """An alert as a notification carries it."""

    fingerprint: str
    name: str
    status: AlertState
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    severity: Severity
    starts_unix_ms: int
    ends_unix_ms: int
    count: int
    source: str = ""
    acknowledged_by: str = ""

    @classmethod
    def of(cls, alert: Alert) -> NotifiedAlert:
        """Snapshot ``alert``."""
        return cls(
            fingerprint=alert.fingerprint,
            name=alert.name,
            status=alert.state,
            labels=dict(alert.labels),
            annotations=dict(alert.annotations),
            severity=alert.severity,
            starts_unix_ms=alert.starts_unix_ms,
            ends_unix_ms=alert.ends_unix_ms,
            count=alert.count,
            source=alert.source,
            acknowledged_by=alert.acknowledged_by,
        )


@dataclass(frozen=True)
class Notification:
    """One group's alerts for one receiver; ``id`` lets a receiver drop a redelivery."""

    id: str
    receiver: str
    group_key: str
    group_labels: Mapping[str, str]
    alerts: tuple[NotifiedAlert, ...]
    created_unix_ms: int
    repeat_interval_ms: int = field(default=0)

    @property
    def status(self) -> AlertState:
        """``firing`` when any alert fires, else ``resolved`` (as Alertmanager's webhook says)."""
        firing = any(a.status is AlertState.FIRING for a in self.alerts)
        return AlertState.FIRING if firing else AlertState.RESOLVED

    def to_json(self) -> str:
        """The stored form."""
        return json.dumps(
            {
                "id": self.id,
                "receiver": self.receiver,
                "group_key": self.group_key,
                "group_labels": dict(self.group_labels),
                "created_ms": self.created_unix_ms,
                "repeat_interval_ms": self.repeat_interval_ms,
                "alerts": [_alert_json(a) for a in self.alerts],
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, raw: str) -> Notification:
        """Parse the stored form."""
        data = json.loads(raw)
        return cls(
            id=data["id"],
            receiver=data["receiver"],
            group_key=data["group_key"],
            group_labels=data["group_labels"],
            created_unix_ms=int(data["created_ms"]),
            repeat_interval_ms=int(data["repeat_interval_ms"]),
            alerts=tuple(_alert_from_json(a) for a in data["alerts"]),
        )


def _alert_json(alert: NotifiedAlert) -> dict[str, Any]:
    return {
        "fingerprint": alert.fingerprint,
        "name": alert.name,
        "status": alert.status.value,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "severity": alert.severity.label,
        "starts_ms": alert.starts_unix_ms,
        "ends_ms": alert.ends_unix_ms,
        "count": alert.count,
        "source": alert.source,
        "acknowledged_by": alert.acknowledged_by,
    }


def _alert_from_json(data: dict[str, Any]) -> NotifiedAlert:
    return NotifiedAlert(
        fingerprint=data["fingerprint"],
        name=data["name"],
        status=AlertState(data["status"]),
        labels=data["labels"],
        annotations=data["annotations"],
        severity=Severity.from_label(data["severity"]),
        starts_unix_ms=int(data["starts_ms"]),
        ends_unix_ms=int(data["ends_ms"]),
        count=int(data["count"]),
        source=data["source"],
        acknowledged_by=data["acknowledged_by"],
    )
