"""SIGKILL the leading coordinator mid-round: the standby finishes the round with the same
participants, and nothing is lost or counted twice."""

from __future__ import annotations

import asyncio

import pytest

from fedmesh.cli.stack import LocalStack
from fedmesh.client.coordinator import CoordinatorClient
from fedmesh.proto.coordinator.v1 import coordinator_pb2 as pb
from fedmesh.rpc import open_channel

from .checks import assert_run_integrity, finished, leader, until, wait_round
from .conftest import Operator, fedavg_spec
from .fleet import Fleet

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

NODES = [f"node-{i}" for i in range(5)]


async def test_leader_killed_while_collecting(stack: LocalStack, operator: Operator) -> None:
    model = "chaos-collecting"
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
        old_leader, old_token = await leader(stack)

        await asyncio.to_thread(stack.kill, old_leader)
        new_leader, new_token = await leader(stack)
        collecting = await wait_round(
            operator.coordinator, run.run_id, 2, lambda r: True, "readable after the takeover"
        )
        await asyncio.to_thread(stack.restart, old_leader)
        async with open_channel(stack.services[old_leader].address) as channel:
            rejoined = await CoordinatorClient(channel).status()
        await fleet.gate.open(2)
        state = await finished(operator.coordinator, run.run_id)

    assert new_leader != old_leader
    assert new_token > old_token
    assert (rejoined.leader, rejoined.replica_id) == (False, old_leader)
    assert rejoined.fencing_token == new_token
    assert before.phase == collecting.phase == pb.ROUND_PHASE_COLLECTING
    after = state.rounds[1]
    assert after.phase == pb.ROUND_PHASE_COMPLETED
    assert sorted(after.participants) == sorted(before.participants) == NODES
    assert sorted(after.received) == NODES
    completed = await assert_run_integrity(stack, state, model, initial, fleet.uploads)
    assert len(completed) == 3


async def test_leader_killed_while_aggregating(stack: LocalStack, operator: Operator) -> None:
    model = "chaos-aggregating"
    initial = await operator.publish_initial(model)
    # node-4 never answers, so each round waits for its deadline and then aggregates 4 updates.
    async with Fleet(stack, NODES, silent=["node-4"]) as fleet:
        await fleet.wait_registered(operator.coordinator)
        spec = fedavg_spec(model, rounds=2, target=5, min_participants=3, collect_deadline_s=6)
        run = await operator.coordinator.start_run(spec)
        before = await wait_round(
            operator.coordinator, run.run_id, 2, lambda r: len(r.received) == 4, "4 updates in"
        )
        # Freeze the aggregator, so the round stays AGGREGATING with the leader's call pending.
        stack.pause("aggregator")
        try:
            aggregating = await wait_round(
                operator.coordinator,
                run.run_id,
                2,
                lambda r: r.phase == pb.ROUND_PHASE_AGGREGATING,
                "aggregating",
            )
            old_leader, old_token = await leader(stack)
            await asyncio.sleep(0.5)  # the leader's AggregateRound call leaves meanwhile
            await asyncio.to_thread(stack.kill, old_leader)
            new_leader, new_token = await leader(stack)
        finally:
            stack.resume("aggregator")
        state = await finished(operator.coordinator, run.run_id)

    assert (new_leader != old_leader, new_token > old_token) == (True, True)
    assert sorted(before.participants) == NODES
    after = state.rounds[1]
    assert after.phase == pb.ROUND_PHASE_COMPLETED
    assert sorted(after.participants) == sorted(aggregating.participants) == NODES
    assert sorted(after.received) == NODES[:4]
    completed = await assert_run_integrity(stack, state, model, initial, fleet.uploads)
    assert len(completed) == 2
    assert all(sorted(r.received) == NODES[:4] for r in completed)


async def _true_or_none(value: bool) -> bool | None:
    return True if value else None
