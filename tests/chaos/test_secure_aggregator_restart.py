"""The aggregator is killed in the middle of a secure round: that round fails with its reason,
the next round starts a fresh SecAgg+ session and completes, and no secure sum is left over."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from fedmesh.cli.demo import MODEL_NAME, DemoSettings, NodeFleet, _publish_initial_model, _spec
from fedmesh.cli.stack import LocalStack
from fedmesh.client.local_data import simulated_clients
from fedmesh.proto.coordinator.v1 import coordinator_pb2 as pb
from fedmesh.services.aggregator.secure_rounds import SESSION_FIELD
from fedmesh.store import RoundStore

from .checks import finished, until
from .conftest import Operator

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
NODES = 4


async def _session_started(rounds: RoundStore, run_id: str) -> bool | None:
    if not await rounds.exists(run_id, 1):
        return None
    return True if SESSION_FIELD in (await rounds.get(run_id, 1)).fields else None


async def test_a_secure_round_cut_by_an_aggregator_restart_fails_and_the_next_completes(
    stack: LocalStack, operator: Operator
) -> None:
    settings = DemoSettings(workdir=stack.workdir, report_dir=stack.workdir, nodes=NODES,
                            rounds=2, mesh_nodes=120, steps=80, local_epochs=2, seed=9,
                            collect_deadline_s=20.0, secure_aggregation=True)  # fmt: skip
    _, clients = await asyncio.to_thread(
        simulated_clients, settings.mesh(), NODES, settings.steps, 9
    )
    initial = await _publish_initial_model(operator.registry, seed=9)
    assert stack.redis_url
    redis = aioredis.from_url(stack.redis_url, decode_responses=True)
    fleet = NodeFleet(stack, clients, seed=9)
    await fleet.start()
    try:

        async def registered() -> bool | None:
            online = [
                n
                for n in await operator.coordinator.list_nodes()
                if n.state == pb.NODE_STATE_ONLINE
            ]
            return True if len(online) >= NODES else None

        await until(registered, "the nodes register", 60)
        run = await operator.coordinator.start_run(_spec(settings))
        await until(
            lambda: _session_started(RoundStore(redis), run.run_id),
            "a node joins round 1's secure session",
            60,
        )
        stack.kill("aggregator")
        await asyncio.to_thread(stack.restart, "aggregator")
        state = await finished(operator.coordinator, run.run_id, timeout_s=180)
    finally:
        await fleet.stop()
        await redis.aclose()

    first, second = state.rounds
    assert first.phase == pb.ROUND_PHASE_FAILED
    assert "restarted or was replaced" in first.failure_reason or first.failure_reason.startswith(
        "quorum missed"
    ), first.failure_reason
    assert second.phase == pb.ROUND_PHASE_COMPLETED, second.failure_reason
    assert sorted(second.received) == sorted(second.participants)
    assert state.run.status == pb.RUN_STATUS_COMPLETED
    # One new version, from round 2; round 1 published nothing.
    versions = await operator.registry.list_versions(MODEL_NAME)
    assert sorted(v.ref.version for v in versions.versions) == [initial, initial + 1]
    assert second.result_model.version == initial + 1
    secure_dir = stack.workdir / "aggregator-spool" / "secure"
    assert not any(p.is_file() for p in secure_dir.rglob("*")), list(secure_dir.rglob("*"))
