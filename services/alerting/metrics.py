"""Prometheus metrics of the alerting service, on a registry of their own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class AlertingMetrics:
    """Counters of events in and notifications out."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "fedmesh_alerting_events",
            "Events and anomaly reports received, by kind and outcome",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "fedmesh_alerting_deliveries",
            "Notification delivery attempts, by sink and outcome",
            ["sink", "outcome"],
            registry=self.registry,
        )
