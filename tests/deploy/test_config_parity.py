"""docker-compose.yml and the Helm chart configure fedmesh with the same FEDMESH_* names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

Manifest = dict[str, Any]
Render = Callable[[dict[str, Any]], list[Manifest]]

COMPONENTS = ("coordinator", "aggregator", "registry", "alerting", "node")
# The settings the services read (libs/fedmesh/config.py and the services' settings).
DOCUMENTED = {
    "FEDMESH_LISTEN",
    "FEDMESH_REDIS_URL",
    "FEDMESH_COORDINATOR_ADDRESS",
    "FEDMESH_AGGREGATOR_ADDRESS",
    "FEDMESH_REGISTRY_ADDRESS",
    "FEDMESH_ALERTING_ADDRESS",
    "FEDMESH_OTLP_ENDPOINT",
    "FEDMESH_METRICS_PORT",
    "FEDMESH_LOG_LEVEL",
    "FEDMESH_TLS_CERT",
    "FEDMESH_TLS_KEY",
    "FEDMESH_TLS_CA",
    "FEDMESH_TRUST_DOMAIN",
    "FEDMESH_REGISTRY_DATA_DIR",
    "FEDMESH_REGISTRY_BLOB_DIR",
    "FEDMESH_REGISTRY_SIGNING_KEY",
    "FEDMESH_AGGREGATOR_SPOOL_DIR",
    "FEDMESH_ALERTING_ALERTMANAGER_URL",
    "FEDMESH_ALERTING_WEBHOOK_URL",
    "FEDMESH_ALERTING_WEBHOOK_TOKEN",
}
# Compose is the dev profile (DESIGN.md §5): plaintext, so it alone sets no TLS files; and
# its registry generates the signing key on its data volume instead of reading a Secret.
TLS = {"FEDMESH_TLS_CERT", "FEDMESH_TLS_KEY", "FEDMESH_TLS_CA"}
HELM_ONLY = TLS | {"FEDMESH_TRUST_DOMAIN", "FEDMESH_REGISTRY_SIGNING_KEY"}


def compose_names(compose: dict[str, Any]) -> dict[str, set[str]]:
    return {
        name: {k for k in compose["services"][name]["environment"] if k.startswith("FEDMESH_")}
        for name in COMPONENTS
    }


def helm_names(render: Render, value_sets: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    """Per component, every FEDMESH_* name the chart sets under any value set, leaving out
    the extra names a value set passes through a service's ``env`` block."""
    names: dict[str, set[str]] = {c: set() for c in COMPONENTS}
    for values in value_sets.values():
        extras = {k for c in COMPONENTS for k in values.get(c, {}).get("env", {})}
        for obj in render(values):
            if obj["kind"] not in ("Deployment", "StatefulSet"):
                continue
            component = obj["spec"]["template"]["metadata"]["labels"].get(
                "app.kubernetes.io/component"
            )
            if component not in names:
                continue
            for container in obj["spec"]["template"]["spec"]["containers"]:
                names[component] |= {
                    e["name"]
                    for e in container.get("env", [])
                    if e["name"].startswith("FEDMESH_") and e["name"] not in extras
                }
    return names


def test_compose_and_helm_set_the_same_names_for_each_component(
    compose: dict[str, Any], render: Render, value_sets: dict[str, dict[str, Any]]
) -> None:
    in_compose = compose_names(compose)
    in_helm = helm_names(render, value_sets)

    for component in COMPONENTS:
        assert in_helm[component] - HELM_ONLY == in_compose[component], component
    # Simulated nodes are dev-profile only; every service gets the TLS files under mTLS.
    for component in ("coordinator", "aggregator", "registry", "alerting"):
        assert in_helm[component] & TLS == TLS, component
    assert in_helm["node"] & TLS == set()


def test_every_name_set_is_a_documented_setting_and_every_setting_is_set(
    compose: dict[str, Any], render: Render, value_sets: dict[str, dict[str, Any]]
) -> None:
    in_compose = set().union(*compose_names(compose).values())
    in_helm = set().union(*helm_names(render, value_sets).values())

    assert in_helm == DOCUMENTED
    assert in_compose == DOCUMENTED - HELM_ONLY


def test_the_deployment_guide_describes_every_setting(repo: Path) -> None:
    guide = (repo / "docs" / "deployment.md").read_text()
    missing = sorted(name for name in DOCUMENTED if f"`{name}`" not in guide)
    assert missing == []


def test_shared_values_agree(compose: dict[str, Any], render: Render, repo: Path) -> None:
    objects = render({})
    dockerfile = (repo / "deploy" / "Dockerfile").read_text()
    for component in ("coordinator", "aggregator", "registry", "alerting"):
        (deployment,) = [
            o
            for o in objects
            if o["kind"] == "Deployment" and o["metadata"]["name"] == f"fm-fedmesh-{component}"
        ]
        helm_env = {
            e["name"]: e.get("value")
            for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        compose_env = compose["services"][component]["environment"]
        assert helm_env["FEDMESH_LISTEN"] == compose_env["FEDMESH_LISTEN"], component
        assert helm_env["FEDMESH_METRICS_PORT"] == compose_env["FEDMESH_METRICS_PORT"] == "9464"
        assert helm_env["FEDMESH_LOG_LEVEL"] == "INFO"
        assert compose_env["FEDMESH_LOG_LEVEL"] == "${FEDMESH_LOG_LEVEL:-INFO}"
        for name in ("FEDMESH_REGISTRY_DATA_DIR", "FEDMESH_AGGREGATOR_SPOOL_DIR"):
            if name in helm_env:
                assert helm_env[name] == compose_env[name], name
                # The image creates the directory for its user at the same path.
                assert f"{name}={helm_env[name]}" in dockerfile, name
        if "FEDMESH_REGISTRY_BLOB_DIR" in helm_env:
            assert helm_env["FEDMESH_REGISTRY_BLOB_DIR"] == compose_env["FEDMESH_REGISTRY_BLOB_DIR"]
