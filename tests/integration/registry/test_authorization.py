"""Registry authorization under mTLS: who publishes, evaluates, promotes and reads models."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
import torch
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedmesh.client.registry import RegistryClient
from fedmesh.errors import FedmeshError
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.rpc import TlsFiles, open_channel, start_server
from fedmesh.rpc.certs import DevCertificateAuthority
from fedmesh.services.registry.server import build
from fedmesh.services.registry.settings import RegistrySettings

MODEL = "detector"
N1 = "spiffe://fedmesh.local/node/n1"
AGGREGATOR = "spiffe://fedmesh.local/service/aggregator"
ANY_ADMIN = "an admin (spiffe://fedmesh.local/admin/<name>)"


@dataclasses.dataclass
class Callers:
    """Clients of one mTLS registry, each with its own certificate."""

    node: RegistryClient
    aggregator: RegistryClient
    coordinator: RegistryClient
    admin: RegistryClient
    anonymous: RegistryClient
    blob_dir: Path


def without_spiffe_id(authority: DevCertificateAuthority) -> TlsFiles:
    """A client certificate signed by the dev CA that carries a DNS name but no SPIFFE ID."""
    ca_key = serialization.load_pem_private_key(
        (authority.directory / "ca-key.pem").read_bytes(), password=None
    )
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate(authority.ca_path.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anonymous")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("anonymous")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = authority.directory / "anonymous.pem", authority.directory / "anon.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return TlsFiles(cert_path, key_path, authority.ca_path)


@pytest.fixture
async def callers(
    tmp_path: Path, registry_settings: RegistrySettings, redis_client: aioredis.Redis
) -> AsyncIterator[Callers]:
    """A registry over mTLS and five callers (one with a certificate but no SPIFFE ID)."""
    authority = DevCertificateAuthority.create(tmp_path / "certs")
    server_tls = authority.issue("service", "registry")
    settings = dataclasses.replace(
        registry_settings, common=dataclasses.replace(registry_settings.common, tls=server_tls)
    )
    running = await start_server(await build(settings, redis_client), tls=server_tls)
    address = f"localhost:{running.port}"
    try:
        async with (
            open_channel(address, tls=authority.issue("node", "n1")) as node,
            open_channel(address, tls=authority.issue("service", "aggregator")) as aggregator,
            open_channel(address, tls=authority.issue("service", "coordinator")) as coordinator,
            open_channel(address, tls=authority.issue("admin", "alice")) as admin,
            open_channel(address, tls=without_spiffe_id(authority)) as anonymous,
        ):
            yield Callers(
                RegistryClient(node),
                RegistryClient(aggregator),
                RegistryClient(coordinator),
                RegistryClient(admin),
                RegistryClient(anonymous),
                settings.blob_dir,
            )
    finally:
        await running.stop(0)


def blob_files(blob_dir: Path) -> list[Path]:
    """Every file under the blob directory."""
    return sorted(p for p in blob_dir.rglob("*") if p.is_file())


async def refused(
    redis: aioredis.Redis, blob_dir: Path, call: Callable[[], Awaitable[object]]
) -> tuple[grpc.StatusCode, str | None]:
    """The gRPC status and message ``call`` fails with, after checking nothing was stored."""
    values = {str(key): await redis.dump(key) for key in sorted(await redis.keys("*"))}
    files = await asyncio.to_thread(blob_files, blob_dir)
    with pytest.raises((FedmeshError, grpc.aio.AioRpcError)) as info:
        await call()
    # The registry client raises domain errors; the gRPC status is their cause.
    error = info.value if isinstance(info.value, grpc.aio.AioRpcError) else info.value.__cause__
    assert isinstance(error, grpc.aio.AioRpcError), info.value
    assert {str(key): await redis.dump(key) for key in sorted(await redis.keys("*"))} == values
    assert await asyncio.to_thread(blob_files, blob_dir) == files
    return error.code(), error.details()


def weights(value: float) -> dict[str, torch.Tensor]:
    """A small model whose every weight is ``value``."""
    return {"w": torch.full((4, 4), value)}


async def test_publishing_is_for_the_aggregator_and_admins(
    callers: Callers, redis_client: aioredis.Redis
) -> None:
    initial = await callers.admin.publish_tensors(MODEL, weights(0.0))
    by_node = await refused(
        redis_client,
        callers.blob_dir,
        lambda: callers.node.publish_tensors(MODEL, weights(1.0), parent_version=1),
    )
    by_coordinator = await refused(
        redis_client,
        callers.blob_dir,
        lambda: callers.coordinator.publish_tensors(MODEL, weights(1.0), parent_version=1),
    )
    aggregated = await callers.aggregator.publish_tensors(MODEL, weights(1.0), parent_version=1)
    meta, downloaded = await callers.node.download_tensors(MODEL, 2)
    latest = await callers.coordinator.get_version(MODEL)

    expected = f"PublishModel is for {AGGREGATOR} or {ANY_ADMIN}; the caller is {{}}"
    assert initial.ref.version == 1
    assert by_node == (grpc.StatusCode.PERMISSION_DENIED, expected.format(N1))
    assert by_coordinator == (
        grpc.StatusCode.PERMISSION_DENIED,
        expected.format("spiffe://fedmesh.local/service/coordinator"),
    )
    assert aggregated.ref.version == meta.ref.version == latest.ref.version == 2
    torch.testing.assert_close(downloaded["w"], weights(1.0)["w"])


async def test_evaluations_come_from_the_coordinator_and_aliases_move_by_admins(
    callers: Callers, redis_client: aioredis.Redis
) -> None:
    await callers.admin.publish_tensors(MODEL, weights(0.0))
    metrics = common.EvaluationMetrics(loss=0.3, macro_f1=0.8, pr_auc=0.7, samples=100, reporters=1)

    evaluation_by_node = await refused(
        redis_client, callers.blob_dir, lambda: callers.node.record_evaluation(MODEL, 1, metrics)
    )
    evaluated = await callers.coordinator.record_evaluation(MODEL, 1, metrics)
    promote_by_node = await refused(
        redis_client, callers.blob_dir, lambda: callers.node.promote(MODEL, 1, "candidate")
    )
    promote_by_aggregator = await refused(
        redis_client,
        callers.blob_dir,
        lambda: callers.aggregator.promote(MODEL, 1, "candidate"),
    )
    rollback_by_node = await refused(
        redis_client, callers.blob_dir, lambda: callers.node.rollback(MODEL, 1)
    )
    promoted = await callers.admin.promote(MODEL, 1, "candidate", reason="review")

    assert evaluation_by_node == (
        grpc.StatusCode.PERMISSION_DENIED,
        f"RecordEvaluation is for spiffe://fedmesh.local/service/coordinator; the caller is {N1}",
    )
    assert evaluated.evaluation.macro_f1 == pytest.approx(0.8)
    assert promote_by_node == (
        grpc.StatusCode.PERMISSION_DENIED,
        f"PromoteModel is for {ANY_ADMIN}; the caller is {N1}",
    )
    assert promote_by_aggregator == (
        grpc.StatusCode.PERMISSION_DENIED,
        f"PromoteModel is for {ANY_ADMIN}; the caller is {AGGREGATOR}",
    )
    assert rollback_by_node == (
        grpc.StatusCode.PERMISSION_DENIED,
        f"RollbackModel is for {ANY_ADMIN}; the caller is {N1}",
    )
    assert "candidate" in promoted.aliases


async def test_a_certificate_without_a_spiffe_id_is_unauthenticated(
    callers: Callers, redis_client: aioredis.Redis
) -> None:
    read = await refused(redis_client, callers.blob_dir, callers.anonymous.status)
    publish = await refused(
        redis_client,
        callers.blob_dir,
        lambda: callers.anonymous.publish_tensors(MODEL, weights(0.0)),
    )

    unauthenticated = (
        grpc.StatusCode.UNAUTHENTICATED,
        "this call needs a client certificate with a SPIFFE ID",
    )
    assert read == publish == unauthenticated
