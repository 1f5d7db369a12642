"""SIGKILL Redis mid-round and start it again on the same append-only file and port: the run
finishes and nothing acknowledged is lost or counted twice."""

from __future__ import annotations

import asyncio

import pytest

from fedmesh.cli.stack import LocalStack
from fedmesh.proto.coordinator.v1 import coordinator_pb2 as pb
from fedmesh.store import connect

from .checks import assert_run_integrity, finished, leader, until, wait_round
from .conftest import Operator, fedavg_spec
from .fleet import Fleet

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

NODES = [f"node-{i}" for i in range(5)]


async def test_redis_killed_and_restarted_mid_round(stack: LocalStack, operator: Operator) -> None:
    model = "chaos-redis"
    initial = await operator.publish_initial(model)
    async with Fleet(stack, NODES) as fleet:
        await fleet.wait_registered(operator.coordinator)
        fleet.gate.hold(2)
        spec = fedavg_spec(model, rounds=3, target=5, min_participants=3, collect_deadline_s=60)
        run = await operator.coordinator.start_run(spec)
        await until(
            lambda: _true_or_none(len(fleet.gate.waiting.get(2, ())) == len(NODES)),
            "every node holds its round-2 update",
        )
        await fleet.gate.let_through(2, 2)
        before = await wait_round(
            operator.coordinator, run.run_id, 2, lambda r: len(r.received) == 2, "2 updates in"
        )

        await asyncio.to_thread(stack.restart_redis, kill=True, down_s=1.0)
        for name in stack.services:
            await asyncio.to_thread(stack.wait_serving, name, 60)
        await leader(stack)
        await fleet.gate.open(2)
        state = await finished(operator.coordinator, run.run_id)

    redis = connect(stack.redis_url)
    try:
        aof_enabled = (await redis.config_get("appendonly"))["appendonly"]
    finally:
        await redis.aclose()
    assert aof_enabled == "yes"
    after = state.rounds[1]
    assert after.phase == pb.ROUND_PHASE_COMPLETED
    assert sorted(after.participants) == sorted(before.participants) == NODES
    assert set(before.received) <= set(after.received)
    assert sorted(after.received) == NODES
    completed = await assert_run_integrity(stack, state, model, initial, fleet.uploads)
    assert len(completed) == 3


async def _true_or_none(value: bool) -> bool | None:
    return True if value else None
