"""The registry's Prometheus metrics, on a collector registry of their own (no process globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class RegistryMetrics:
    """Publishes by outcome, bytes in and out, tampering found, alias moves, blobs dropped."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._publishes = Counter(
            "fedmesh_registry_publishes",
            "PublishModel calls by outcome (published, duplicate, refused)",
            ["outcome"],
            registry=self.registry,
        )
        self._publish_seconds = Histogram(
            "fedmesh_registry_publish_seconds",
            "Time from the header to the recorded version, for new versions",
            buckets=(0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )
        self._bytes = Counter(
            "fedmesh_registry_bytes",
            "Model bytes received by publishes and sent by downloads",
            ["direction"],
            registry=self.registry,
        )
        self._tampering = Counter(
            "fedmesh_registry_tampering",
            "Records or blobs that failed verification, by model",
            ["model"],
            registry=self.registry,
        )
        self._alias_moves = Counter(
            "fedmesh_registry_alias_moves",
            "Alias moves, by alias and action",
            ["alias", "action"],
            registry=self.registry,
        )
        self._dropped = Counter(
            "fedmesh_registry_blobs_dropped",
            "Versions whose blob retention dropped",
            registry=self.registry,
        )

    def published(self, seconds: float) -> None:
        """Count one new version and how long its publish took."""
        self._publishes.labels(outcome="published").inc()
        self._publish_seconds.observe(seconds)

    def publish_outcome(self, outcome: str) -> None:
        """Count a publish that made no new version: 'duplicate' or 'refused'."""
        self._publishes.labels(outcome=outcome).inc()

    def received(self, nbytes: int) -> None:
        """Count payload bytes as they arrive."""
        self._bytes.labels(direction="in").inc(nbytes)

    def sent(self, nbytes: int) -> None:
        """Count payload bytes as they leave."""
        self._bytes.labels(direction="out").inc(nbytes)

    def tampering(self, model: str) -> None:
        """Count one failed verification."""
        self._tampering.labels(model=model).inc()

    def alias_moved(self, alias: str, action: str) -> None:
        """Count one alias move."""
        self._alias_moves.labels(alias=alias, action=action).inc()

    def blobs_dropped(self, count: int) -> None:
        """Count versions whose blob retention dropped."""
        self._dropped.inc(count)

    def value(self, name: str, **labels: str) -> float:
        """The current value of a sample (``fedmesh_registry_bytes_total``…), 0 when unset."""
        return self.registry.get_sample_value(name, labels) or 0.0
