"""The log sink: one structured log record per alert of a notification; it cannot fail."""

from __future__ import annotations

import logging

from fedmesh.services.alerting.notification import Notification

log = logging.getLogger("fedmesh.alerts")


class LogSink:
    """Writes alerts to the ``fedmesh.alerts`` logger (JSON logs carry the fields)."""

    @property
    def name(self) -> str:
        """``log``."""
        return "log"

    @property
    def target(self) -> str:
        """The logger's name."""
        return f"logger:{log.name}"

    async def send(self, notification: Notification) -> None:
        """Log every alert, at WARNING when firing and INFO when resolved."""
        for alert in notification.alerts:
            level = logging.WARNING if alert.status.value == "firing" else logging.INFO
            log.log(
                level,
                f"alert {alert.status.value}: {alert.name}",
                extra={
                    "fields": {
                        "alertname": alert.name,
                        "fingerprint": alert.fingerprint,
                        "status": alert.status.value,
                        "severity": alert.severity.label,
                        "count": alert.count,
                        "labels": dict(alert.labels),
                        "annotations": dict(alert.annotations),
                        "group_key": notification.group_key,
                        "notification_id": notification.id,
                    }
                },
            )
