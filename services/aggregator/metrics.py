"""The aggregator's Prometheus counters, on a registry of its own (no process globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class AggregatorMetrics:
    """Rejected updates, bytes received, rounds aggregated and their time, secure buckets."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._rejected = Counter(
            "fedmesh_aggregator_updates_rejected",
            "Updates refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        self._accepted = Counter(
            "fedmesh_aggregator_updates_accepted",
            "Updates spooled with a new receipt",
            registry=self.registry,
        )
        self._received = Counter(
            "fedmesh_aggregator_received_bytes",
            "Payload bytes received in SubmitUpdate streams, accepted or not",
            registry=self.registry,
        )
        self._rounds = Counter(
            "fedmesh_aggregator_rounds_aggregated",
            "Rounds aggregated and published",
            registry=self.registry,
        )
        self._secure_buckets = Counter(
            "fedmesh_aggregator_secure_buckets",
            "SecAgg+ buckets settled, by outcome (completed or aborted)",
            ["outcome"],
            registry=self.registry,
        )
        self._secure_seconds = Histogram(
            "fedmesh_aggregator_secure_round_seconds",
            "Time from a secure round's first join until all its buckets settled",
            buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=self.registry,
        )
        self._seconds = Histogram(
            "fedmesh_aggregator_aggregation_seconds",
            "Time to aggregate one round (rule, new model, publish)",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )

    def rejected(self, reason: str) -> None:
        """Count one refused update."""
        self._rejected.labels(reason=reason).inc()

    def accepted(self) -> None:
        """Count one newly accepted update."""
        self._accepted.inc()

    def received(self, nbytes: int) -> None:
        """Count payload bytes as they arrive."""
        self._received.inc(nbytes)

    def aggregated(self, seconds: float) -> None:
        """Count one aggregated round and its duration."""
        self._rounds.inc()
        self._seconds.observe(seconds)

    def secure_round_settled(self, completed: int, aborted: int, seconds: float) -> None:
        """Count a secure round's buckets by outcome and how long its stages took."""
        self._secure_buckets.labels(outcome="completed").inc(completed)
        self._secure_buckets.labels(outcome="aborted").inc(aborted)
        self._secure_seconds.observe(seconds)

    def secure_buckets(self, outcome: str) -> int:
        """Secure buckets settled so far with ``outcome``."""
        value = self.registry.get_sample_value(
            "fedmesh_aggregator_secure_buckets_total", {"outcome": outcome}
        )
        return int(value or 0)

    @property
    def rejected_total(self) -> int:
        """Updates refused so far, all reasons together."""
        return int(
            sum(
                sample.value
                for metric in self._rejected.collect()
                for sample in metric.samples
                if sample.name.endswith("_total")
            )
        )

    def rejected_for(self, reason: str) -> int:
        """Updates refused so far for ``reason``."""
        value = self.registry.get_sample_value(
            "fedmesh_aggregator_updates_rejected_total", {"reason": reason}
        )
        return int(value or 0)

    @property
    def received_bytes(self) -> int:
        """Payload bytes received so far."""
        return int(self.registry.get_sample_value("fedmesh_aggregator_received_bytes_total") or 0)

    @property
    def rounds_aggregated(self) -> int:
        """Rounds aggregated so far."""
        return int(
            self.registry.get_sample_value("fedmesh_aggregator_rounds_aggregated_total") or 0
        )
