"""Under mTLS the coordinator authorizes each RPC: nodes act as themselves, admins run runs."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis

from fedmesh.client.alerting import EventEmitter
from fedmesh.client.coordinator import CoordinatorClient
from fedmesh.client.signing import NodeSigner
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.proto.coordinator.v1 import coordinator_pb2 as pb
from fedmesh.rpc import open_channel, start_server
from fedmesh.rpc.certs import DevCertificateAuthority
from fedmesh.services.coordinator.server import build
from fedmesh.services.coordinator.settings import CoordinatorSettings

from .conftest import MODEL, snapshot

N1 = "spiffe://fedmesh.local/node/n1"
KEY = NodeSigner.generate().public_key
ADMIN_REFUSAL = (
    "{rpc} is for an admin (spiffe://fedmesh.local/admin/<name>); the caller is {caller}"
)
SPEC = pb.RunSpec(
    model_name=MODEL,
    aggregation=common.AggregationSpec(rule=common.AGGREGATION_RULE_FEDAVG),
    rounds=1,
    min_participants=1,
    target_participants=1,
    collect_deadline_s=30,
    aggregate_deadline_s=30,
)


@dataclasses.dataclass
class Callers:
    """Clients of one mTLS coordinator, each with its own certificate."""

    node: CoordinatorClient
    coordinator_service: CoordinatorClient
    admin: CoordinatorClient


@pytest.fixture
async def callers(
    tmp_path: Path,
    coordinator_settings: CoordinatorSettings,
    redis_client: aioredis.Redis,
    published: int,
) -> AsyncIterator[Callers]:
    """A coordinator serving its API over mTLS (no control loop), and three callers."""
    authority = DevCertificateAuthority.create(tmp_path / "certs")
    server_tls = authority.issue("service", "coordinator")
    settings = dataclasses.replace(
        coordinator_settings,
        common=dataclasses.replace(coordinator_settings.common, tls=server_tls),
    )
    async with (
        open_channel(settings.common.aggregator_address) as aggregator,
        open_channel(settings.common.registry_address) as registry,
    ):
        coordinator = build(
            settings, redis_client, aggregator, registry, EventEmitter(None, source="coordinator")
        )
        running = await start_server([coordinator.binding], tls=server_tls)
        address = f"localhost:{running.port}"
        try:
            async with (
                open_channel(address, tls=authority.issue("node", "n1")) as node,
                open_channel(address, tls=server_tls) as service,
                open_channel(address, tls=authority.issue("admin", "alice")) as admin,
            ):
                yield Callers(
                    CoordinatorClient(node, timeout_s=5),
                    CoordinatorClient(service, timeout_s=5),
                    CoordinatorClient(admin, timeout_s=5),
                )
        finally:
            await running.stop(0)


async def refused(
    redis: aioredis.Redis, call: Callable[[], Awaitable[object]]
) -> tuple[grpc.StatusCode, str | None]:
    """The status and message ``call`` fails with, after checking Redis is exactly as before."""
    before = await snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call()
    assert await snapshot(redis) == before, "a refused call changed the stored state"
    return info.value.code(), info.value.details()


async def first_task(client: CoordinatorClient, node_id: str) -> object:
    """Open the node's task stream and wait for its first task."""
    async for task in client.tasks(node_id, stream_timeout_s=5):
        return task
    return None


async def test_a_node_acts_only_as_itself(callers: Callers, redis_client: aioredis.Redis) -> None:
    registered = await callers.node.register("n1", 100, "north", {}, KEY)
    beat = await callers.node.heartbeat("n1")

    refusals = [
        await refused(redis_client, lambda: callers.node.register("n2", 100, "north", {}, KEY)),
        await refused(redis_client, lambda: callers.node.heartbeat("n2")),
        await refused(redis_client, lambda: first_task(callers.node, "n2")),
        await refused(
            redis_client,
            lambda: callers.node.report_evaluation(
                "n2", "run-1", 1, common.ModelRef(name=MODEL, version=1), common.EvaluationMetrics()
            ),
        ),
        await refused(redis_client, lambda: callers.admin.heartbeat("n1")),
        await refused(redis_client, lambda: callers.coordinator_service.heartbeat("n1")),
    ]

    assert registered.node.node_id == "n1"
    assert beat.state == pb.NODE_STATE_ONLINE
    n2 = "spiffe://fedmesh.local/node/n2"
    assert refusals == [
        (grpc.StatusCode.PERMISSION_DENIED, f"caller {N1} may not act as {n2}"),
        (grpc.StatusCode.PERMISSION_DENIED, f"caller {N1} may not act as {n2}"),
        (grpc.StatusCode.PERMISSION_DENIED, f"caller {N1} may not act as {n2}"),
        (grpc.StatusCode.PERMISSION_DENIED, f"caller {N1} may not act as {n2}"),
        (
            grpc.StatusCode.PERMISSION_DENIED,
            f"caller spiffe://fedmesh.local/admin/alice may not act as {N1}",
        ),
        (
            grpc.StatusCode.PERMISSION_DENIED,
            f"caller spiffe://fedmesh.local/service/coordinator may not act as {N1}",
        ),
    ]


async def test_only_an_admin_starts_and_stops_runs(
    callers: Callers, redis_client: aioredis.Redis
) -> None:
    await callers.node.register("n1", 100, "north", {}, KEY)

    by_node = await refused(redis_client, lambda: callers.node.start_run(SPEC))
    by_service = await refused(redis_client, lambda: callers.coordinator_service.start_run(SPEC))
    run = await callers.admin.start_run(SPEC)
    stop_by_node = await refused(redis_client, lambda: callers.node.stop_run(run.run_id, "no"))
    seen_by_node = await callers.node.get_run(run.run_id)
    stopped = await callers.admin.stop_run(run.run_id, "done")
    nodes = await callers.coordinator_service.list_nodes()

    assert by_node == (
        grpc.StatusCode.PERMISSION_DENIED,
        ADMIN_REFUSAL.format(rpc="StartRun", caller=N1),
    )
    assert by_service == (
        grpc.StatusCode.PERMISSION_DENIED,
        ADMIN_REFUSAL.format(rpc="StartRun", caller="spiffe://fedmesh.local/service/coordinator"),
    )
    assert stop_by_node == (
        grpc.StatusCode.PERMISSION_DENIED,
        ADMIN_REFUSAL.format(rpc="StopRun", caller=N1),
    )
    assert seen_by_node.run.run_id == run.run_id
    assert stopped.status == pb.RUN_STATUS_STOPPED
    assert [n.node_id for n in nodes] == ["n1"]
