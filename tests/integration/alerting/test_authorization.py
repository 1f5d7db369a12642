"""With mTLS: a node reports as itself, a service emits as itself, an admin silences."""

from pathlib import Path

import grpc
import pytest

from fedmesh.client.alerting import AlertingClient
from fedmesh.rpc import open_channel
from fedmesh.rpc.certs import DevCertificateAuthority

from .conftest import StartAlerting


@pytest.fixture
def authority(tmp_path: Path) -> DevCertificateAuthority:
    return DevCertificateAuthority.create(tmp_path / "certs")


async def test_callers_act_only_as_themselves(
    start_alerting: StartAlerting, authority: DevCertificateAuthority
) -> None:
    server = authority.issue("service", "alerting")
    alerting = await start_alerting(
        FEDMESH_TLS_CERT=str(server.cert_chain),
        FEDMESH_TLS_KEY=str(server.private_key),
        FEDMESH_TLS_CA=str(server.ca),
    )
    address = f"localhost:{alerting.port}"

    async with (
        open_channel(address, tls=authority.issue("node", "n1")) as node_channel,
        open_channel(address, tls=authority.issue("service", "coordinator")) as service_channel,
        open_channel(address, tls=authority.issue("admin", "alice")) as admin_channel,
    ):
        node, service = AlertingClient(node_channel), AlertingClient(service_channel)
        admin = AlertingClient(admin_channel)
        own = await node.report_anomaly("n1", 0.95, {}, "mesh-detector", 1, "r1")
        emitted = await service.emit("round_failed", source="coordinator", labels={"run": "r1"})
        silence = await admin.create_silence(["node=n9"], duration_s=60, created_by="alice")
        acked = await admin.acknowledge(emitted.fingerprint, by="alice")
        denied = []
        for call in (
            node.report_anomaly("n2", 0.95, {}, "mesh-detector", 1, "r1"),
            service.emit("round_failed", source="registry", labels={"run": "r2"}),
            admin.create_silence(["node=n9"], duration_s=60, created_by="bob"),
            node.create_silence(["node=n9"], duration_s=60, created_by="n1"),
            node.acknowledge(emitted.fingerprint, by="n1"),
            service.expire_silence(silence.id),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            denied.append((info.value.code(), info.value.details()))
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await node.emit("round_failed", source="", labels={"run": "r3"})
        alerts = await node.list_alerts()
        silences = await admin.list_silences()

    assert own.alerted
    assert acked.acknowledged_by == "alice"
    assert [code for code, _ in denied] == [grpc.StatusCode.PERMISSION_DENIED] * 6
    assert denied[0][1] == (
        "caller spiffe://fedmesh.local/node/n1 may not act as spiffe://fedmesh.local/node/n2"
    )
    assert denied[1][1] == (
        "caller spiffe://fedmesh.local/service/coordinator may not act as "
        "spiffe://fedmesh.local/service/registry"
    )
    assert denied[2][1] == "created_by is 'bob' but the caller is admin 'alice'"
    assert anonymous.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert anonymous.value.details() == (
        "event.source is empty; with mTLS an event must name the service that emits it, "
        "and the caller must be that service"
    )
    assert denied[3][1] == (
        "caller spiffe://fedmesh.local/node/n1 may not act as spiffe://fedmesh.local/admin/n1"
    )
    assert sorted(a.labels.get("node", a.labels.get("run", "")) for a in alerts) == ["n1", "r1"]
    assert [(s.id, s.expired) for s in silences] == [(silence.id, False)]
