"""docker-compose.yml against the Compose Specification schema, and what the stack must hold."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

SERVICES = {"coordinator": 50051, "aggregator": 50052, "registry": 50053, "alerting": 50054}
INFRASTRUCTURE = {"redis", "otel-collector", "jaeger", "prometheus", "alertmanager"}
SCHEMA_SHA256 = "56bab44c85c0ce8affb74474950293f37d510673283a243bcd7eeadb900fa35c"
HEALTH_CHECK = "/opt/fedmesh/grpc_health_check.py"


@pytest.fixture(scope="module")
def compose_schema(repo: Path) -> dict[str, Any]:
    raw = (repo / "tests" / "deploy" / "schemas" / "compose-spec.json").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == SCHEMA_SHA256, "vendored schema was changed"
    schema: dict[str, Any] = json.loads(raw)
    return schema


def schema_errors(document: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft201909Validator(schema)
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(document)]


def listen_port(service: dict[str, Any]) -> int:
    return int(service["environment"]["FEDMESH_LISTEN"].rpartition(":")[2])


def compose_unescape(value: str) -> str:
    """What Compose hands the container: ``$$`` is a literal ``$``."""
    return value.replace("$$", "$")


def test_compose_file_matches_the_compose_specification(
    compose: dict[str, Any], compose_schema: dict[str, Any]
) -> None:
    assert schema_errors(compose, compose_schema) == []


def test_the_schema_check_rejects_a_misspelt_key(
    compose: dict[str, Any], compose_schema: dict[str, Any]
) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["registry"]["helthcheck"] = broken["services"]["registry"].pop("healthcheck")
    broken["services"]["redis"]["depends_on"] = {"registry": {"condition": "healthy"}}

    errors = schema_errors(broken, compose_schema)

    assert any("helthcheck" in e for e in errors)
    assert any("healthy" in e for e in errors)


def test_the_stack_has_the_services_infrastructure_and_nodes(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == set(SERVICES) | INFRASTRUCTURE | {"node"}


def test_each_service_runs_fedmesh_serve_from_the_one_image(compose: dict[str, Any]) -> None:
    images = set()
    for name, service in compose["services"].items():
        if name in INFRASTRUCTURE:
            assert "build" not in service, name
            continue
        images.add(service["image"])
        assert service["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}, name
        if name in SERVICES:
            assert service["command"] == ["fedmesh", "serve", name]
    assert images == {"${FEDMESH_IMAGE:-fedmesh:dev}"}


def test_each_service_listens_on_its_port_and_is_health_checked_there(
    compose: dict[str, Any],
) -> None:
    for name, port in SERVICES.items():
        service = compose["services"][name]
        assert listen_port(service) == port
        check = service["healthcheck"]
        assert check["test"] == ["CMD", "python", HEALTH_CHECK, "--address", f"127.0.0.1:{port}"]
        assert check["retries"] >= 3
        assert service["ports"] == [f"127.0.0.1:{port}:{port}"]


def test_services_wait_for_healthy_dependencies_in_an_order_that_can_start(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name in (*SERVICES, "node"):
        depends = services[name]["depends_on"]
        for dependency, rule in depends.items():
            if dependency in ("otel-collector",):
                # Tracing is best effort: a service starts without a collector.
                assert rule == {"condition": "service_started"}
                continue
            assert rule == {"condition": "service_healthy"}, (name, dependency)
            assert "healthcheck" in services[dependency], dependency
        if name in SERVICES:
            assert "redis" in depends, name
    assert set(services["coordinator"]["depends_on"]) >= {"aggregator", "registry", "alerting"}
    assert set(services["node"]["depends_on"]) == set(SERVICES)

    # A cycle of service_healthy would leave every member of it waiting forever.
    started: list[str] = []
    pending = dict(services)
    while pending:
        ready = [n for n, s in pending.items() if set(s.get("depends_on", {})) <= set(started)]
        assert ready, f"depends_on cycle among {sorted(pending)}"
        for n in ready:
            started.append(n)
            del pending[n]


def test_redis_keeps_an_append_only_file_on_a_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert redis["volumes"] == ["redis-data:/data"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for name in SERVICES:
        assert compose["services"][name]["environment"]["FEDMESH_REDIS_URL"] == (
            "redis://redis:6379/0"
        )


def test_registry_data_and_aggregator_spool_are_named_volumes(compose: dict[str, Any]) -> None:
    registry = compose["services"]["registry"]["environment"]
    data_dir = registry["FEDMESH_REGISTRY_DATA_DIR"]
    assert registry["FEDMESH_REGISTRY_BLOB_DIR"] == f"{data_dir}/blobs"
    for name, variable, volume in (
        ("registry", "FEDMESH_REGISTRY_DATA_DIR", "registry-data"),
        ("aggregator", "FEDMESH_AGGREGATOR_SPOOL_DIR", "aggregator-spool"),
    ):
        service = compose["services"][name]
        path = service["environment"][variable]
        assert service["volumes"] == [f"{volume}:{path}"]
        assert volume in compose["volumes"]


def test_each_node_keeps_its_signing_key_on_a_volume_across_restarts(
    compose: dict[str, Any], repo: Path
) -> None:
    node = compose["services"]["node"]
    assert node["volumes"] == ["node-keys:/var/lib/fedmesh/node-keys"]
    assert "node-keys" in compose["volumes"]
    # The image creates the directory for its user, so the named volume starts writable.
    dockerfile = (repo / "deploy" / "Dockerfile").read_text()
    assert "/var/lib/fedmesh/node-keys" in dockerfile


def test_fedmesh_containers_are_non_root_and_read_only(compose: dict[str, Any], repo: Path) -> None:
    dockerfile = (repo / "deploy" / "Dockerfile").read_text()
    user = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")][-1]
    for name in (*SERVICES, "node"):
        service = compose["services"][name]
        assert service["user"] == user, name
        assert service["read_only"] is True, name
        assert service["tmpfs"] == ["/tmp"], name
        assert service["cap_drop"] == ["ALL"], name
        assert service["security_opt"] == ["no-new-privileges:true"], name
    assert compose["services"]["redis"]["read_only"] is True


def test_nodes_scale_and_each_replica_gets_its_own_id_and_a_region(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    node = compose["services"]["node"]
    assert node["deploy"]["replicas"] >= 2
    shell, flag, script = node["command"]
    assert (shell, flag) == ("sh", "-c")
    # Run the command as the container would, with a stand-in `fedmesh` that prints argv.
    stub = tmp_path / "fedmesh"
    stub.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    sh = shutil.which("sh")
    assert sh is not None
    argvs = {}
    for hostname in ("3f2a9c01be77", "91d0c4aa52e3", "0b7e11c2d9f0"):
        env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "HOSTNAME": hostname}
        result = subprocess.run(
            [sh, "-c", compose_unescape(script)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        argvs[hostname] = result.stdout.splitlines()
    for hostname, argv in argvs.items():
        assert argv[:3] == ["node", "--node-id", f"sim-{hostname}"]
        assert argv[3] == "--region"
        assert argv[4] in {f"region-{i}" for i in range(4)}
        assert argv[5:] == ["--signing-key", f"/var/lib/fedmesh/node-keys/sim-{hostname}.pem"]
    again = subprocess.run(
        [sh, "-c", compose_unescape(script)],
        env={"PATH": f"{tmp_path}:{os.environ['PATH']}", "HOSTNAME": "3f2a9c01be77"},
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    assert again.stdout.splitlines() == argvs["3f2a9c01be77"]


def test_spans_flow_from_the_services_through_the_collector_to_jaeger(
    compose: dict[str, Any], repo: Path
) -> None:
    collector = compose["services"]["otel-collector"]
    config_flag = next(a for a in collector["command"] if a.startswith("--config="))
    mounted = {
        target: source for source, target, *_ in (v.split(":") for v in collector["volumes"])
    }
    source = mounted[config_flag.removeprefix("--config=")]
    config = yaml.safe_load((repo / source).read_text())

    grpc_receiver = config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    for name in (*SERVICES, "node"):
        endpoint = compose["services"][name]["environment"]["FEDMESH_OTLP_ENDPOINT"]
        assert endpoint == f"http://otel-collector:{grpc_receiver.rpartition(':')[2]}"
    traces = config["service"]["pipelines"]["traces"]
    assert set(traces["receivers"]) <= set(config["receivers"])
    assert set(traces["processors"]) <= set(config["processors"])
    assert set(traces["exporters"]) <= set(config["exporters"])
    assert set(config["service"]["extensions"]) <= set(config["extensions"])
    jaeger_exporter = config["exporters"]["otlp/jaeger"]
    assert "otlp/jaeger" in traces["exporters"]
    host, _, port = jaeger_exporter["endpoint"].partition(":")
    assert host in compose["services"]
    assert compose["services"][host]["image"].startswith("jaegertracing/all-in-one:")
    assert port == "4317"


def test_prometheus_scrapes_every_service_metrics_port(compose: dict[str, Any], repo: Path) -> None:
    prometheus = compose["services"]["prometheus"]
    mounts = dict(v.split(":")[1::-1] for v in prometheus["volumes"])
    config = yaml.safe_load((repo / mounts["/etc/prometheus/prometheus.yml"]).read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    expected = {
        f"{name}:{compose['services'][name]['environment']['FEDMESH_METRICS_PORT']}"
        for name in SERVICES
    }
    assert targets == expected


def test_alerting_routes_to_the_stack_alertmanager(compose: dict[str, Any]) -> None:
    env = compose["services"]["alerting"]["environment"]
    host, _, port = env["FEDMESH_ALERTING_ALERTMANAGER_URL"].removeprefix("http://").partition(":")
    assert host in compose["services"]
    assert port == "9093"
    assert compose["services"]["alerting"]["depends_on"][host] == {"condition": "service_healthy"}
