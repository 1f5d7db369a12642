"""mTLS with SPIFFE identities from the dev CA: who calls is known, and matched exactly."""

from pathlib import Path
from typing import Any

import grpc
import pytest

from fedmesh.errors import InvalidArgument
from fedmesh.proto.alerting.v1 import alerting_pb2 as pb
from fedmesh.proto.alerting.v1 import alerting_pb2_grpc as pb_grpc
from fedmesh.rpc import ServiceBinding, open_channel, start_server, translate_errors
from fedmesh.rpc.certs import DevCertificateAuthority, spiffe_id
from fedmesh.rpc.identity import peer_identity, require_identity
from fedmesh.rpc.tls import TlsFiles

SERVICE = pb.DESCRIPTOR.services_by_name["AlertingService"].full_name


class Echo(pb_grpc.AlertingServiceServicer):
    """Answers Emit with the caller's identity, after checking it is node-1."""

    @translate_errors
    async def Emit(self, request: pb.EmitRequest, context: Any) -> pb.EmitResponse:
        require_identity(context, spiffe_id("node", request.event.source), tls_required=True)
        return pb.EmitResponse(fingerprint=peer_identity(context) or "")


async def emit_as(server_tls: TlsFiles, client_tls: TlsFiles, claimed: str) -> str:
    servicer = Echo()  # type: ignore[abstract]
    running = await start_server(
        [
            ServiceBinding(
                SERVICE, lambda s: pb_grpc.add_AlertingServiceServicer_to_server(servicer, s)
            )
        ],
        address="127.0.0.1:0",
        tls=server_tls,
    )
    try:
        async with open_channel(f"localhost:{running.port}", tls=client_tls) as channel:
            reply = await pb_grpc.AlertingServiceStub(channel).Emit(
                pb.EmitRequest(event=pb.Event(kind="k", source=claimed)), timeout=10
            )
            return str(reply.fingerprint)
    finally:
        await running.stop(0)


@pytest.fixture
def authority(tmp_path: Path) -> DevCertificateAuthority:
    return DevCertificateAuthority.create(tmp_path / "certs")


async def test_the_caller_is_known_by_its_spiffe_id(authority: DevCertificateAuthority) -> None:
    server = authority.issue("service", "alerting")
    node = authority.issue("node", "node-1")

    assert await emit_as(server, node, "node-1") == "spiffe://fedmesh.local/node/node-1"


async def test_a_prefix_of_the_identity_is_not_the_identity(
    authority: DevCertificateAuthority,
) -> None:
    server = authority.issue("service", "alerting")
    node = authority.issue("node", "node-1")

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await emit_as(server, node, "node-10")

    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert info.value.details() == (
        "caller spiffe://fedmesh.local/node/node-1 may not act as spiffe://fedmesh.local/node/node-10"
    )


async def test_a_certificate_from_another_ca_is_refused(
    authority: DevCertificateAuthority, tmp_path: Path
) -> None:
    server = authority.issue("service", "alerting")
    stranger = DevCertificateAuthority.create(tmp_path / "other").issue("node", "node-1")

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await emit_as(server, stranger, "node-1")

    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_keys_are_private_and_identities_well_formed(authority: DevCertificateAuthority) -> None:
    files = authority.issue("node", "n1")

    assert files.private_key.stat().st_mode & 0o777 == 0o600
    assert (authority.directory / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    with pytest.raises(InvalidArgument, match="identity name 'a/b'"):
        spiffe_id("node", "a/b")
    with pytest.raises(InvalidArgument, match="identity kind 'root'"):
        spiffe_id("root", "x")
