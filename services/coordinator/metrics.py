"""The coordinator's Prometheus metrics, on a registry of its own (no process globals).

Each replica counts what it did itself: the sum over replicas is the stack's total.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fedmesh.store import Phase

ROUND_SECONDS_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)


class CoordinatorMetrics:
    """Rounds opened and closed, phase transitions, round durations, leadership."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._opened = Counter(
            "fedmesh_coordinator_rounds_opened",
            "Rounds this replica opened (participants selected, tasks stored)",
            registry=self.registry,
        )
        self._closed = Counter(
            "fedmesh_coordinator_rounds_closed",
            "Rounds this replica closed, by outcome (completed or failed)",
            ["outcome"],
            registry=self.registry,
        )
        self._transitions = Counter(
            "fedmesh_coordinator_phase_transitions",
            "Round phase transitions this replica made, by the phase entered",
            ["phase"],
            registry=self.registry,
        )
        self._round_seconds = Histogram(
            "fedmesh_coordinator_round_seconds",
            "Wall time of a round from opening to closing",
            buckets=ROUND_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self._leader = Gauge(
            "fedmesh_coordinator_leader",
            "1 while this replica holds the leader lease, else 0",
            registry=self.registry,
        )
        self._token = Gauge(
            "fedmesh_coordinator_fencing_token",
            "The fencing token this replica leads with (0 as a standby)",
            registry=self.registry,
        )
        self._leadership = Counter(
            "fedmesh_coordinator_leadership_changes",
            "Times this replica became leader or lost the lease",
            ["change"],
            registry=self.registry,
        )
        for phase in Phase:
            self._transitions.labels(phase.value)
        for outcome in ("completed", "failed"):
            self._closed.labels(outcome)
        for change in ("acquired", "lost"):
            self._leadership.labels(change)

    def round_opened(self) -> None:
        """Count a round opened."""
        self._opened.inc()

    def transitioned(self, phase: Phase) -> None:
        """Count a phase transition into ``phase``."""
        self._transitions.labels(phase.value).inc()

    def round_closed(self, completed: bool, seconds: float) -> None:
        """Count a closed round and observe its duration."""
        self._closed.labels("completed" if completed else "failed").inc()
        self._round_seconds.observe(max(seconds, 0.0))

    def leading(self, fencing_token: int) -> None:
        """This replica became leader with ``fencing_token``."""
        self._leader.set(1)
        self._token.set(fencing_token)
        self._leadership.labels("acquired").inc()

    def standing_by(self) -> None:
        """This replica lost (or gave up) the lease."""
        self._leader.set(0)
        self._token.set(0)
        self._leadership.labels("lost").inc()
