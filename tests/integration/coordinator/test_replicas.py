"""Two coordinator replicas on one Redis: one leads, the standby serves the API and takes over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
import pytest
import redis.asyncio as aioredis

from fedmesh.client.signing import NodeSigner
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.proto.coordinator.v1 import coordinator_pb2 as pb
from fedmesh.store import connect, free_port, keys

from .conftest import MODEL, Replica, StartReplica

T = TypeVar("T")


async def until(probe: Callable[[], Awaitable[T | None]], what: str, timeout_s: float = 20) -> T:
    deadline = time.monotonic() + timeout_s
    while (value := await probe()) is None:
        assert time.monotonic() < deadline, f"{what}: not reached in {timeout_s} s"
        await asyncio.sleep(0.05)
    return value


async def leading(replica: Replica) -> pb.GetStatusResponse:
    async def probe() -> pb.GetStatusResponse | None:
        status = await replica.client.status()
        return status if status.leader else None

    return await until(probe, f"{replica.coordinator.replica.replica_id} leads")


def spec(collect_deadline_s: float = 30.0) -> pb.RunSpec:
    return pb.RunSpec(
        model_name=MODEL,
        aggregation=common.AggregationSpec(rule=common.AGGREGATION_RULE_FEDAVG),
        rounds=1,
        min_participants=3,
        target_participants=3,
        collect_deadline_s=collect_deadline_s,
        aggregate_deadline_s=30,
    )


async def register(replica: Replica, count: int = 3) -> list[str]:
    nodes = [f"node-{i}" for i in range(count)]
    for node in nodes:
        await replica.client.register(node, 100, "north", {}, NodeSigner.generate().public_key)
    return nodes


async def test_one_replica_leads_and_the_standby_shows_the_leaders_token(
    start_replica: StartReplica,
) -> None:
    async with start_replica(replica_id="a") as a:
        led = await leading(a)
        async with start_replica(replica_id="b") as b:
            await asyncio.sleep(0.3)  # several lease attempts of the standby
            standby = await b.client.status()

    assert (led.replica_id, led.fencing_token, led.leader_id) == ("a", 1, "a")
    assert (standby.leader, standby.replica_id) == (False, "b")
    assert standby.fencing_token == led.fencing_token
    assert standby.leader_id == "a"


async def test_the_standby_serves_runs_and_task_streams(
    start_replica: StartReplica, published: int
) -> None:
    async with start_replica(replica_id="a") as a, start_replica(replica_id="b") as b:
        await leading(a)
        nodes = await register(b)
        stream = b.client.tasks("node-0", stream_timeout_s=10)

        run = await b.client.start_run(spec())
        task = await anext(stream)
        state = await b.client.get_run(run.run_id)
        listed = await b.client.list_runs()

    assert (task.run_id, task.round, task.kind) == (run.run_id, 1, pb.TASK_KIND_TRAIN)
    assert (task.model.name, task.model.version) == (MODEL, published)
    assert task.task_id == f"{run.run_id}/1/train/node-0"
    assert state.rounds[0].phase == pb.ROUND_PHASE_COLLECTING
    assert sorted(state.rounds[0].participants) == nodes
    assert [r.run_id for r in listed] == [run.run_id]


async def test_the_standby_takes_over_and_closes_the_round_it_inherits(
    start_replica: StartReplica, published: int
) -> None:
    async with start_replica(replica_id="a") as a, start_replica(replica_id="b") as b:
        old = await leading(a)
        nodes = await register(a)
        run = await a.client.start_run(spec(collect_deadline_s=1.0))
        opened = await until(lambda: _first_round(a, run.run_id), "round 1 opens")

        await a.stop_loops()
        new = await leading(b)
        state = await until(
            lambda: _finished(b, run.run_id), "the new leader closes the round", timeout_s=30
        )

    assert new.fencing_token > old.fencing_token
    closed = state.rounds[0]
    assert sorted(closed.participants) == sorted(opened.participants) == nodes
    assert closed.deadline_unix_ms == opened.deadline_unix_ms
    assert closed.phase == pb.ROUND_PHASE_FAILED
    assert closed.failure_reason == (
        "quorum missed: 0 of 3 selected nodes sent an update before the deadline; 3 required"
    )
    assert state.run.status == pb.RUN_STATUS_FAILED
    assert (state.run.rounds_completed, state.run.rounds_failed) == (0, 1)


async def test_a_stopping_replica_ends_its_task_streams(
    start_replica: StartReplica, redis_client: aioredis.Redis
) -> None:
    async with start_replica(replica_id="a") as a:
        await leading(a)
        await register(a, 1)
        received: list[pb.Task] = []

        async def follow() -> None:
            async for task in a.client.tasks("node-0", stream_timeout_s=30):
                received.append(task)

        stream = asyncio.create_task(follow())
        await asyncio.sleep(0.2)
        await a.stop_loops()
        await asyncio.wait_for(stream, timeout=10)
        lease = await redis_client.get(keys.leader_key())

    assert received == []
    assert lease is None, "a replica that stops gracefully gives its lease up"


async def test_a_redis_outage_is_unavailable_not_internal(start_replica: StartReplica) -> None:
    unreachable = connect(f"redis://127.0.0.1:{free_port()}/0")
    try:
        async with start_replica(loops=False, redis=unreachable) as cut_off:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await cut_off.stub.Heartbeat(pb.HeartbeatRequest(node_id="n1"), timeout=20)
    finally:
        await unreachable.aclose()

    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    details = info.value.details() or ""
    assert details.startswith("the coordinator's Redis is unreachable (")
    assert details.endswith("); retry shortly")


async def _finished(replica: Replica, run_id: str) -> pb.GetRunResponse | None:
    state = await replica.client.get_run(run_id)
    return None if state.run.status == pb.RUN_STATUS_RUNNING else state


async def _first_round(replica: Replica, run_id: str) -> pb.RoundInfo | None:
    state = await replica.client.get_run(run_id)
    return state.rounds[0] if state.rounds else None
