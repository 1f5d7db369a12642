"""Fixtures for the deployment tests: the chart rendered offline by Helm's Go SDK, compose."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

Manifest = dict[str, Any]
Render = Callable[[dict[str, Any]], list[Manifest]]


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root."""
    return REPO


@pytest.fixture(scope="session")
def chart_dir() -> Path:
    """The Helm chart's directory."""
    return REPO / "deploy" / "helm" / "fedmesh"


@pytest.fixture(scope="session")
def helm_chart(chart_dir: Path) -> Iterator[helm.Chart]:
    """The chart, loaded once."""
    with helm.Chart.load(chart_dir) as chart:
        yield chart


@pytest.fixture(scope="session")
def render_raw(helm_chart: helm.Chart) -> Callable[[dict[str, Any]], dict[str, str]]:
    """Render with values as release "fm" in namespace "mesh": template path -> text."""
    cache: dict[str, dict[str, str]] = {}

    def render(values: dict[str, Any]) -> dict[str, str]:
        key = json.dumps(values, sort_keys=True)
        if key not in cache:
            cache[key] = helm_chart.render(values, name="fm", namespace="mesh")
        return cache[key]

    return render


@pytest.fixture(scope="session")
def render(render_raw: Callable[[dict[str, Any]], dict[str, str]]) -> Render:
    """Render with values; every Kubernetes object of the release, hooks included.

    The lists are shared between tests: a test that changes an object copies it first.
    """
    cache: dict[str, list[Manifest]] = {}

    def objects(values: dict[str, Any]) -> list[Manifest]:
        key = json.dumps(values, sort_keys=True)
        if key not in cache:
            cache[key] = [
                doc
                for path, text in sorted(render_raw(values).items())
                if path.endswith(".yaml")
                for doc in yaml.safe_load_all(text)
                if doc
            ]
        return cache[key]

    return objects


@pytest.fixture(scope="session")
def compose(repo: Path) -> dict[str, Any]:
    """docker-compose.yml as Compose reads it (anchors and merge keys resolved)."""
    loaded: dict[str, Any] = yaml.safe_load((repo / "docker-compose.yml").read_text())
    return loaded


# The value sets the chart must render, lint and validate under (like microservices-demo's
# chart CI). Each one switches on what a real installation would.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "tls-cert-manager": {
        "tls": {"mode": "certManager", "certManager": {"issuerRef": {"name": "fedmesh-ca"}}}
    },
    "tls-spire": {"tls": {"mode": "spire", "trustDomain": "mesh.example.org"}},
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}},
    "external-redis-url": {
        "redis": {"internal": {"enabled": False}, "url": "redis://redis.data:6379/3"}
    },
    "external-redis-secret": {
        "redis": {"internal": {"enabled": False}, "existingSecret": "fedmesh-redis"}
    },
    "ha-and-everything": {
        "coordinator": {"replicas": 3, "env": {"FEDMESH_COORDINATOR_LEASE_SECONDS": "10"}},
        "registry": {
            "replicas": 2,
            "data": {"persistence": {"accessModes": ["ReadWriteMany"], "storageClass": "nfs"}},
            "signingKey": {"existingSecret": "fedmesh-registry-signing"},
        },
        "aggregator": {"spool": {"persistence": {"enabled": True}}},
        "alerting": {
            "alertmanagerUrl": "http://alertmanager.monitoring:9093",
            "webhookSecret": {"name": "fedmesh-webhook", "tokenKey": "token"},
        },
        "config": {"otlpEndpoint": "http://otel-collector.observability:4317"},
        "networkPolicy": {
            "clientsFrom": [{"ipBlock": {"cidr": "10.42.0.0/16"}}],
            "metricsFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}
            ],
        },
        "redis": {"internal": {"persistence": {"enabled": False}}},
        "simulatedNodes": {"enabled": True, "regions": ["north", "south"]},
        "imagePullSecrets": [{"name": "regcred"}],
    },
    "dev-no-persistence": {
        "registry": {"data": {"persistence": {"enabled": False}}},
        "redis": {"internal": {"persistence": {"enabled": False}}},
        "networkPolicy": {"enabled": False},
        "serviceAccount": {"create": False},
        "coordinator": {"replicas": 1},
    },
}


@pytest.fixture(scope="session")
def value_sets() -> dict[str, dict[str, Any]]:
    """Every value set, by name."""
    return VALUE_SETS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that takes ``value_set`` runs once per value set (its name, then its values)."""
    if "value_set" in metafunc.fixturenames:
        metafunc.parametrize("value_set", list(VALUE_SETS.values()), ids=list(VALUE_SETS))
