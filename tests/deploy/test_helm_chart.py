"""The Helm chart, rendered and linted offline by Helm's own Go SDK (helm-python-sdk)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

Manifest = dict[str, Any]
Render = Callable[[dict[str, Any]], list[Manifest]]

PORTS = {"coordinator": 50051, "aggregator": 50052, "registry": 50053, "alerting": 50054}
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion), and the newest schema
# kubernetes-validate ships: a field that is too new or an API that was removed fails one.
KUBE_VERSIONS = ("1.29.0", "1.37.0")
# Kinds that are not Kubernetes built-ins: kubernetes-validate has no schema for them.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("cert-manager.io/v1", "Certificate"),
}
RECOMMENDED_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
)


def of_kind(objects: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def deployment(objects: list[Manifest], component: str) -> Manifest:
    return of_kind(objects, "Deployment")[f"fm-fedmesh-{component}"]


def pod_specs(objects: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet"):
            yield o["metadata"]["name"], o["spec"]["template"]["spec"]
        elif o["kind"] == "Pod":
            yield o["metadata"]["name"], o["spec"]


def env_of(container: Manifest) -> dict[str, Manifest]:
    return {e["name"]: e for e in container.get("env", [])}


def test_chart_lints_clean(chart_dir: Path, value_set: dict[str, Any]) -> None:
    report = helm.lint(chart_dir, value_set, strict=True, kube_version="v1.29.0")

    assert report["errors"] == []
    findings = [m for m in report["messages"] if m["severity"] >= 2]
    assert findings == []


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_manifest_matches_the_kubernetes_schemas(
    render: Render, value_sets: dict[str, dict[str, Any]], kube_version: str
) -> None:
    # One pass over the distinct objects of every value set: most are the same in all.
    distinct: dict[str, tuple[str, Manifest]] = {}
    for name, values in value_sets.items():
        for obj in render(values):
            distinct.setdefault(json.dumps(obj, sort_keys=True), (name, obj))
    problems = []
    custom = set()
    for name, obj in distinct.values():
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            custom.add(obj["kind"])
            continue
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = "/".join(str(p) for p in err.path)
            problems.append(
                f"{name}: {obj['kind']}/{obj['metadata']['name']} {path}: {err.message}"
            )
    assert problems == []
    assert custom == {"ServiceMonitor", "Certificate"}


def test_strict_schema_validation_catches_a_misspelt_field(render: Render) -> None:
    broken = copy.deepcopy(deployment(render({}), "coordinator"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["prot"] = 1

    with pytest.raises(kubernetes_validate.ValidationError, match="prot"):
        kubernetes_validate.validate(broken, KUBE_VERSIONS[0], strict=True)


def test_every_object_carries_the_recommended_labels(
    render: Render, value_set: dict[str, Any]
) -> None:
    for obj in render(value_set):
        labels = obj["metadata"].get("labels", {})
        missing = [label for label in RECOMMENDED_LABELS if label not in labels]
        assert missing == [], f"{obj['kind']}/{obj['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/instance"] == "fm"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_each_service_runs_fedmesh_serve_with_native_grpc_probes_on_its_port(
    render: Render,
) -> None:
    objects = render({})
    services = of_kind(objects, "Service")
    for component, port in PORTS.items():
        container = deployment(objects, component)["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["fedmesh", "serve", component]
        assert container["image"] == "fedmesh:0.1.0"
        grpc_port = {p["name"]: p["containerPort"] for p in container["ports"]}["grpc"]
        assert grpc_port == port
        assert env_of(container)["FEDMESH_LISTEN"]["value"] == f"0.0.0.0:{port}"
        expected = {"startupProbe": "", "livenessProbe": "fedmesh.liveness", "readinessProbe": ""}
        for probe, service in expected.items():
            assert container[probe]["grpc"] == {"port": port, "service": service}, probe
            assert "exec" not in container[probe]
        service_ports = {p["name"]: p for p in services[f"fm-fedmesh-{component}"]["spec"]["ports"]}
        assert service_ports["grpc"]["port"] == port
        assert service_ports["grpc"]["targetPort"] == "grpc"
        assert service_ports["metrics"]["port"] == 9464


def test_services_find_each_other_by_their_service_names(render: Render) -> None:
    objects = render({})
    services = of_kind(objects, "Service")
    for component in PORTS:
        env = env_of(deployment(objects, component)["spec"]["template"]["spec"]["containers"][0])
        for peer, port in PORTS.items():
            host, _, peer_port = env[f"FEDMESH_{peer.upper()}_ADDRESS"]["value"].partition(":")
            assert host in services
            assert services[host]["spec"]["selector"]["app.kubernetes.io/component"] == peer
            assert int(peer_port) == port


def test_containers_run_as_non_root_on_a_read_only_root_filesystem(
    render: Render, value_set: dict[str, Any]
) -> None:
    checked = 0
    for name, spec in pod_specs(render(value_set)):
        pod_ctx = spec.get("securityContext", {})
        assert pod_ctx.get("runAsNonRoot") is True, name
        assert pod_ctx.get("runAsUser", 0) != 0, name
        assert pod_ctx["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec.get("automountServiceAccountToken") is False, name
        for container in spec["containers"] + spec.get("initContainers", []):
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, (name, container["name"])
            assert ctx["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert ctx["capabilities"]["drop"] == ["ALL"], (name, container["name"])
            assert "add" not in ctx["capabilities"], (name, container["name"])
            assert ctx.get("runAsUser", pod_ctx["runAsUser"]) != 0, (name, container["name"])
            checked += 1
    assert checked >= 5


def test_the_fedmesh_image_runs_as_the_uid_the_dockerfile_creates(
    render: Render, repo: Path
) -> None:
    dockerfile = (repo / "deploy" / "Dockerfile").read_text()
    user = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    uid, gid = user[-1].split(":")
    for name, spec in pod_specs(render({})):
        if spec["containers"][0]["image"].startswith("fedmesh:"):
            assert spec["securityContext"]["runAsUser"] == int(uid), name
            assert spec["securityContext"]["runAsGroup"] == int(gid), name


def test_writable_paths_are_volumes(render: Render, value_set: dict[str, Any]) -> None:
    objects = render(value_set)
    for component in PORTS:
        spec = deployment(objects, component)["spec"]["template"]["spec"]
        container = spec["containers"][0]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], component
        env = env_of(container)
        for variable in ("FEDMESH_REGISTRY_DATA_DIR", "FEDMESH_AGGREGATOR_SPOOL_DIR"):
            if variable in env:
                volume = volumes[mounts[env[variable]["value"]]]
                assert "emptyDir" in volume or "persistentVolumeClaim" in volume, component
        assert ("FEDMESH_REGISTRY_DATA_DIR" in env) == (component == "registry")
        assert ("FEDMESH_AGGREGATOR_SPOOL_DIR" in env) == (component == "aggregator")
        if component == "registry":
            # The blobs sit inside the data volume, next to the signing key.
            data_dir = env["FEDMESH_REGISTRY_DATA_DIR"]["value"]
            assert env["FEDMESH_REGISTRY_BLOB_DIR"]["value"] == f"{data_dir}/blobs"


def test_registry_data_lives_on_a_kept_claim_by_default(render: Render) -> None:
    objects = render({})
    claims = of_kind(objects, "PersistentVolumeClaim")
    spec = deployment(objects, "registry")["spec"]
    volume = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}["data"]
    claim = claims[volume["persistentVolumeClaim"]["claimName"]]
    env = env_of(spec["template"]["spec"]["containers"][0])

    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert spec["strategy"] == {"type": "Recreate"}
    assert "fm-fedmesh-aggregator-spool" not in claims
    # Without a Secret the signing key is generated in the data dir, on the claim.
    assert "FEDMESH_REGISTRY_SIGNING_KEY" not in env


def test_registry_signing_key_and_webhook_token_come_from_secrets(
    render: Render, value_sets: dict[str, dict[str, Any]]
) -> None:
    objects = render(value_sets["ha-and-everything"])
    registry = deployment(objects, "registry")["spec"]["template"]["spec"]
    container = registry["containers"][0]
    mount = {m["name"]: m for m in container["volumeMounts"]}["signing-key"]
    secret = {v["name"]: v for v in registry["volumes"]}["signing-key"]["secret"]
    assert secret == {"secretName": "fedmesh-registry-signing", "defaultMode": 0o400}
    assert mount["readOnly"] is True
    key_path = env_of(container)["FEDMESH_REGISTRY_SIGNING_KEY"]["value"]
    assert key_path == f"{mount['mountPath']}/signing.key"

    alerting = deployment(objects, "alerting")["spec"]["template"]["spec"]["containers"][0]
    env = env_of(alerting)
    assert env["FEDMESH_ALERTING_WEBHOOK_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "fedmesh-webhook", "key": "url"}
    }
    assert env["FEDMESH_ALERTING_WEBHOOK_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": "fedmesh-webhook", "key": "token"}
    }
    assert env["FEDMESH_ALERTING_ALERTMANAGER_URL"]["value"] == (
        "http://alertmanager.monitoring:9093"
    )


def test_every_service_has_a_disruption_budget_that_selects_its_pods(
    render: Render, value_set: dict[str, Any]
) -> None:
    objects = render(value_set)
    budgets = of_kind(objects, "PodDisruptionBudget")
    for component in PORTS:
        budget = budgets[f"fm-fedmesh-{component}"]
        pod_labels = deployment(objects, component)["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert budget["spec"]["maxUnavailable"] == 1
        assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_coordinator_runs_replicas_spread_over_nodes(render: Render) -> None:
    for replicas in (2, 3):
        objects = render({"coordinator": {"replicas": replicas}})
        spec = deployment(objects, "coordinator")["spec"]
        assert spec["replicas"] == replicas
        (spread,) = spec["template"]["spec"]["topologySpreadConstraints"]
        assert spread["topologyKey"] == "kubernetes.io/hostname"
        assert spread["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == (
            "coordinator"
        )
    assert deployment(render({}), "coordinator")["spec"]["replicas"] >= 2


def test_network_policy_admits_the_release_and_configured_clients_only(render: Render) -> None:
    values = {"networkPolicy": {"clientsFrom": [{"ipBlock": {"cidr": "10.42.0.0/16"}}]}}
    objects = render(values)
    policies = of_kind(objects, "NetworkPolicy")
    release = {"app.kubernetes.io/name": "fedmesh", "app.kubernetes.io/instance": "fm"}
    for component in PORTS:
        policy = policies[f"fm-fedmesh-{component}"]["spec"]
        pod_labels = deployment(objects, component)["spec"]["template"]["metadata"]["labels"]
        assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
        assert policy["policyTypes"] == ["Ingress"]
        grpc_rule, metrics_rule = policy["ingress"]
        assert grpc_rule["ports"] == [{"port": "grpc", "protocol": "TCP"}]
        assert grpc_rule["from"] == [
            {"podSelector": {"matchLabels": release}},
            {"ipBlock": {"cidr": "10.42.0.0/16"}},
        ]
        assert metrics_rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
        assert metrics_rule["from"] == [{"podSelector": {"matchLabels": release}}]
    redis_rule = policies["fm-fedmesh-redis"]["spec"]["ingress"]
    assert redis_rule == [
        {
            "from": [{"podSelector": {"matchLabels": release}}],
            "ports": [{"port": "redis", "protocol": "TCP"}],
        }
    ]
    assert of_kind(render({"networkPolicy": {"enabled": False}}), "NetworkPolicy") == {}


def test_service_monitor_is_off_by_default_and_scrapes_the_metrics_port_when_on(
    render: Render,
) -> None:
    assert of_kind(render({}), "ServiceMonitor") == {}

    objects = render({"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}})
    monitors = of_kind(objects, "ServiceMonitor")
    services = of_kind(objects, "Service")
    assert len(monitors) == len(PORTS)
    for component in PORTS:
        monitor = monitors[f"fm-fedmesh-{component}"]
        service = services[f"fm-fedmesh-{component}"]
        assert monitor["metadata"]["labels"]["release"] == "kps"
        selected = [
            s
            for s in services.values()
            if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]
        assert selected == [service]
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert endpoint["port"] == "metrics"
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["mesh"]}


def test_internal_redis_is_a_statefulset_with_aof(render: Render) -> None:
    objects = render({})
    redis = of_kind(objects, "StatefulSet")["fm-fedmesh-redis"]
    container = redis["spec"]["template"]["spec"]["containers"][0]
    args = container["command"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] == "everysec"
    assert container["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert "fm-fedmesh-redis" in of_kind(objects, "Service")
    for component in PORTS:
        env = env_of(deployment(objects, component)["spec"]["template"]["spec"]["containers"][0])
        assert env["FEDMESH_REDIS_URL"]["value"] == "redis://fm-fedmesh-redis:6379/0"


def test_external_redis_by_url_or_secret_replaces_the_internal_one(
    render: Render, value_sets: dict[str, dict[str, Any]]
) -> None:
    for name, expected in (
        ("external-redis-url", {"name": "FEDMESH_REDIS_URL", "value": "redis://redis.data:6379/3"}),
        (
            "external-redis-secret",
            {
                "name": "FEDMESH_REDIS_URL",
                "valueFrom": {"secretKeyRef": {"name": "fedmesh-redis", "key": "url"}},
            },
        ),
    ):
        objects = render(value_sets[name])
        assert "fm-fedmesh-redis" not in of_kind(objects, "StatefulSet"), name
        assert "fm-fedmesh-redis" not in of_kind(objects, "NetworkPolicy"), name
        for component in PORTS:
            container = deployment(objects, component)["spec"]["template"]["spec"]["containers"][0]
            assert env_of(container)["FEDMESH_REDIS_URL"] == expected, (name, component)


def test_cert_manager_tls_mounts_a_certificate_per_service_and_probes_over_mtls(
    render: Render, value_sets: dict[str, dict[str, Any]]
) -> None:
    objects = render(value_sets["tls-cert-manager"])
    # A plaintext `helm test` pod could not pass against mTLS ports: the probes check instead.
    assert of_kind(objects, "Pod") == {}
    certificates = of_kind(objects, "Certificate")
    accounts = of_kind(objects, "ServiceAccount")
    for component, port in PORTS.items():
        name = f"fm-fedmesh-{component}"
        spec = deployment(objects, component)["spec"]["template"]["spec"]
        container = spec["containers"][0]
        certificate = certificates[name]["spec"]
        # The identity is the one per-RPC authorization expects of the service (service/<name>);
        # clients verify the Service name.
        assert spec["serviceAccountName"] in accounts
        assert certificate["uris"] == [f"spiffe://fedmesh.local/service/{component}"]
        assert name in certificate["dnsNames"]
        assert f"{name}.mesh.svc.cluster.local" in certificate["dnsNames"]
        assert certificate["issuerRef"]["name"] == "fedmesh-ca"
        assert set(certificate["usages"]) == {"server auth", "client auth"}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["tls"]["secret"]["secretName"] == certificate["secretName"]
        mount = {m["name"]: m for m in container["volumeMounts"]}["tls"]
        assert mount["readOnly"] is True
        env = env_of(container)
        assert {env[f"FEDMESH_TLS_{p}"]["value"] for p in ("CERT", "KEY", "CA")} == {
            f"{mount['mountPath']}/{f}" for f in ("tls.crt", "tls.key", "ca.crt")
        }
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert "grpc" not in container[probe]
            command = container[probe]["exec"]["command"]
            assert command[:2] == ["python", "/opt/fedmesh/grpc_health_check.py"]
            assert command[command.index("--address") + 1] == f"127.0.0.1:{port}"
            assert command[command.index("--server-name") + 1] == name


def test_spire_tls_writes_svids_through_a_native_sidecar(
    render: Render, value_sets: dict[str, dict[str, Any]]
) -> None:
    objects = render(value_sets["tls-spire"])
    assert of_kind(objects, "Certificate") == {}
    (config_map,) = of_kind(objects, "ConfigMap").values()
    helper_conf = dict(
        (key.strip(), value.strip().strip('"'))
        for key, _, value in (
            line.partition("=") for line in config_map["data"]["helper.conf"].splitlines()
        )
    )
    for component in PORTS:
        spec = deployment(objects, component)["spec"]["template"]["spec"]
        (sidecar,) = spec["initContainers"]
        assert sidecar["restartPolicy"] == "Always"
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["spiffe-workload-api"]["csi"] == {
            "driver": "csi.spiffe.io",
            "readOnly": True,
        }
        assert (
            volumes["spiffe-helper-config"]["configMap"]["name"] == config_map["metadata"]["name"]
        )
        assert volumes["tls"]["emptyDir"]["medium"] == "Memory"
        sidecar_mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
        assert helper_conf["agent_address"].startswith(sidecar_mounts["spiffe-workload-api"] + "/")
        assert helper_conf["cert_dir"] == sidecar_mounts["tls"]
        env = env_of(spec["containers"][0])
        for variable, written in (
            ("FEDMESH_TLS_CERT", "svid_file_name"),
            ("FEDMESH_TLS_KEY", "svid_key_file_name"),
            ("FEDMESH_TLS_CA", "svid_bundle_file_name"),
        ):
            expected = f"{helper_conf['cert_dir']}/{helper_conf[written]}"
            assert env[variable]["value"] == expected, variable
        annotations = deployment(objects, component)["spec"]["template"]["metadata"]["annotations"]
        assert len(annotations["checksum/spiffe-helper"]) == 64


def test_simulated_nodes_are_one_statefulset_per_region(
    render: Render, value_sets: dict[str, dict[str, Any]]
) -> None:
    assert [n for n in of_kind(render({}), "StatefulSet") if "-node-" in n] == []

    objects = render(value_sets["ha-and-everything"])
    for region in ("north", "south"):
        nodes = of_kind(objects, "StatefulSet")[f"fm-fedmesh-node-{region}"]
        assert nodes["spec"]["replicas"] == 2
        container = nodes["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == [
            "fedmesh",
            "node",
            "--node-id",
            "$(POD_NAME)",
            "--region",
            region,
        ]
        env = env_of(container)
        assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        assert env["FEDMESH_COORDINATOR_ADDRESS"]["value"] == "fm-fedmesh-coordinator:50051"
        assert "FEDMESH_REDIS_URL" not in env


def test_the_packaged_chart_renders_like_the_directory(
    chart_dir: Path, tmp_path: Path, render_raw: Callable[[dict[str, Any]], dict[str, str]]
) -> None:
    archive = Path(helm.package(chart_dir, destination=tmp_path))
    assert archive.name == "fedmesh-0.1.0.tgz"
    with helm.Chart.load(archive) as packaged:
        assert packaged.render({}, name="fm", namespace="mesh") == render_raw({})


def test_helm_test_checks_every_service_through_its_service_address(render: Render) -> None:
    (pod,) = of_kind(render({}), "Pod").values()
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    addresses = [
        c["command"][c["command"].index("--address") + 1] for c in pod["spec"]["containers"]
    ]
    assert sorted(addresses) == sorted(f"fm-fedmesh-{c}:{p}" for c, p in PORTS.items())


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"aggregator": {"replicas": 2}}, "/aggregator/replicas"),
        ({"tls": {"mode": "vault"}}, "/tls/mode"),
        ({"coordinator": {"replicaz": 3}}, "replicaz"),
        ({"coordinator": {"env": {"LOG_LEVEL": "x"}}}, "'LOG_LEVEL' does not match"),
        ({"tls": {"mode": "certManager"}}, "needs tls.certManager.issuerRef.name"),
        ({"redis": {"url": "redis://r:6379/0"}}, "set redis.internal.enabled=false"),
        ({"redis": {"internal": {"enabled": False}}}, "set redis.url or redis.existingSecret"),
        ({"redis": {"internal": {"enabled": False}, "url": "http://r"}}, "/redis/url"),
        ({"registry": {"replicas": 2}}, "needs registry.data.persistence.accessModes"),
        (
            {"simulatedNodes": {"enabled": True}, "tls": {"mode": "spire"}},
            "dev profile only",
        ),
    ],
)
def test_contradictory_values_are_refused_with_a_reason(
    helm_chart: helm.Chart, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmError, match=message.replace(".", r"\.")):
        helm_chart.render(values, name="fm", namespace="mesh")
