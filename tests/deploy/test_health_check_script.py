"""deploy/grpc_health_check.py (the compose healthcheck and the mTLS exec probe) against a
real gRPC server with the standard health service, plaintext and with mutual TLS."""

from __future__ import annotations

import datetime
import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "fedmesh.registry.v1.RegistryService"
SERVER_NAME = "fm-fedmesh-registry"


@pytest.fixture(scope="module")
def probe(repo: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "grpc_health_check", repo / "deploy" / "grpc_health_check.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class HealthServer:
    port: int
    health: health.HealthServicer


def start(credentials: grpc.ServerCredentials | None = None) -> tuple[grpc.Server, HealthServer]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, HealthServer(port, servicer)


@pytest.fixture
def plain() -> Iterator[HealthServer]:
    server, handle = start()
    yield handle
    server.stop(None)


def set_status(server: HealthServer, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", SERVICE):
        server.health.set(name, status)


def test_serving_exits_zero(probe: ModuleType, plain: HealthServer) -> None:
    set_status(plain, serving=True)

    assert probe.main(["--address", f"127.0.0.1:{plain.port}"]) == 0
    assert probe.main(["--address", f"127.0.0.1:{plain.port}", "--service", SERVICE]) == 0


def test_not_serving_exits_one_and_says_so(
    probe: ModuleType, plain: HealthServer, capsys: pytest.CaptureFixture[str]
) -> None:
    set_status(plain, serving=False)

    assert probe.main(["--address", f"127.0.0.1:{plain.port}"]) == 1
    assert f"127.0.0.1:{plain.port}: NOT_SERVING" in capsys.readouterr().err


def test_unknown_service_and_no_server_exit_two(
    probe: ModuleType, plain: HealthServer, capsys: pytest.CaptureFixture[str]
) -> None:
    set_status(plain, serving=True)
    assert probe.main(["--address", f"127.0.0.1:{plain.port}", "--service", "nope.v1.X"]) == 2
    assert "NOT_FOUND" in capsys.readouterr().err

    server, handle = start()
    server.stop(None)
    assert probe.main(["--address", f"127.0.0.1:{handle.port}", "--timeout", "1"]) == 2
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_runs_standalone_as_the_containers_run_it(repo: Path, plain: HealthServer) -> None:
    set_status(plain, serving=True)
    script = str(repo / "deploy" / "grpc_health_check.py")
    address = f"127.0.0.1:{plain.port}"

    ok = subprocess.run([sys.executable, script, "--address", address], timeout=30, check=False)
    set_status(plain, serving=False)
    down = subprocess.run(
        [sys.executable, script, "--address", address], capture_output=True, timeout=30, check=False
    )

    assert ok.returncode == 0
    assert down.returncode == 1


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key_and_name(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Name]:
    return ec.generate_private_key(ec.SECP256R1()), x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Path:
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA and two leaves as cert-manager issues them: SPIFFE URI and Service DNS names."""
    directory = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key, ca_name = _key_and_name("fedmesh test CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(name: str, account: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key, subject = _key_and_name(name)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.UniformResourceIdentifier(
                            f"spiffe://fedmesh.local/ns/mesh/sa/{account}"
                        ),
                        x509.DNSName(name),
                        x509.DNSName(f"{name}.mesh.svc.cluster.local"),
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        return cert, key

    server_cert, server_key = leaf(SERVER_NAME, SERVER_NAME)
    client_cert, client_key = leaf("fm-fedmesh-coordinator", "fm-fedmesh-coordinator")
    return Pki(
        ca=directory / "ca.crt",
        server_cert=_write(directory / "server.crt", server_cert, server_key),
        server_key=directory / "server.key",
        client_cert=_write(directory / "client.crt", client_cert, client_key),
        client_key=directory / "client.key",
    )


@pytest.fixture
def mtls(pki: Pki) -> Iterator[HealthServer]:
    credentials = grpc.ssl_server_credentials(
        [(pki.server_key.read_bytes(), pki.server_cert.read_bytes())],
        root_certificates=pki.ca.read_bytes(),
        require_client_auth=True,
    )
    server, handle = start(credentials)
    set_status(handle, serving=True)
    yield handle
    server.stop(None)


def use_tls(monkeypatch: pytest.MonkeyPatch, cert: Path, key: Path, ca: Path) -> None:
    monkeypatch.setenv("FEDMESH_TLS_CERT", str(cert))
    monkeypatch.setenv("FEDMESH_TLS_KEY", str(key))
    monkeypatch.setenv("FEDMESH_TLS_CA", str(ca))


def test_mtls_probe_with_the_pods_certificate_and_the_service_name(
    probe: ModuleType, mtls: HealthServer, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_tls(monkeypatch, pki.client_cert, pki.client_key, pki.ca)
    address = f"127.0.0.1:{mtls.port}"

    assert probe.main(["--address", address, "--server-name", SERVER_NAME]) == 0
    set_status(mtls, serving=False)
    assert probe.main(["--address", address, "--server-name", SERVER_NAME]) == 1


def test_mtls_probe_fails_without_the_right_name_or_a_client_certificate(
    probe: ModuleType,
    mtls: HealthServer,
    pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    address = f"127.0.0.1:{mtls.port}"
    use_tls(monkeypatch, pki.client_cert, pki.client_key, pki.ca)
    # 127.0.0.1 is not among the certificate's names: the server's identity is not proven.
    assert probe.main(["--address", address, "--timeout", "2"]) == 2
    assert probe.main(["--address", address, "--server-name", "other", "--timeout", "2"]) == 2

    monkeypatch.delenv("FEDMESH_TLS_CERT")
    monkeypatch.delenv("FEDMESH_TLS_KEY")
    monkeypatch.delenv("FEDMESH_TLS_CA")
    # Plaintext against an mTLS port, as kubelet's native gRPC probe would do.
    assert probe.main(["--address", address, "--timeout", "2"]) == 2

    use_tls(monkeypatch, pki.client_cert, pki.client_key, pki.ca.with_name("missing.crt"))
    assert probe.main(["--address", address, "--server-name", SERVER_NAME]) == 2
    assert "missing.crt" in capsys.readouterr().err


def test_half_a_tls_configuration_is_refused(
    probe: ModuleType, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDMESH_TLS_CERT", str(pki.client_cert))
    monkeypatch.delenv("FEDMESH_TLS_KEY", raising=False)
    monkeypatch.delenv("FEDMESH_TLS_CA", raising=False)

    with pytest.raises(SystemExit, match="must be set together"):
        probe.main(["--address", "127.0.0.1:1"])
