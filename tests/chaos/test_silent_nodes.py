"""30 % of the selected nodes take their task and never answer: each round closes at its
deadline with the updates that came, and every one of them is counted once."""

from __future__ import annotations

import pytest

from fedmesh.cli.stack import LocalStack
from fedmesh.proto.coordinator.v1 import coordinator_pb2 as pb

from .checks import assert_run_integrity, finished
from .conftest import Operator, fedavg_spec
from .fleet import Fleet

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

NODES = [f"node-{i}" for i in range(10)]
SILENT = NODES[7:]


async def test_silent_nodes_do_not_stall_the_run(stack: LocalStack, operator: Operator) -> None:
    model = "chaos-silent"
    initial = await operator.publish_initial(model)
    async with Fleet(stack, NODES, silent=SILENT) as fleet:
        await fleet.wait_registered(operator.coordinator)
        spec = fedavg_spec(model, rounds=2, target=10, min_participants=5, collect_deadline_s=5)
        run = await operator.coordinator.start_run(spec)
        state = await finished(operator.coordinator, run.run_id)
        ignored = {node.node_id: len(node.ignored) for node in fleet.nodes if node.silent}

    completed = await assert_run_integrity(stack, state, model, initial, fleet.uploads)
    assert len(completed) == 2
    for info in state.rounds:
        assert info.phase == pb.ROUND_PHASE_COMPLETED
        assert sorted(info.participants) == NODES
        assert sorted(info.received) == NODES[:7]
    # Each silent node was given both rounds' tasks (and the final evaluation) and sat on them.
    assert all(count >= 2 for count in ignored.values()), ignored


async def test_too_many_silent_nodes_fail_each_round_with_its_reason(
    stack: LocalStack, operator: Operator
) -> None:
    model = "chaos-quorum"
    initial = await operator.publish_initial(model)
    async with Fleet(stack, NODES, silent=SILENT) as fleet:
        await fleet.wait_registered(operator.coordinator)
        spec = fedavg_spec(model, rounds=2, target=10, min_participants=8, collect_deadline_s=4)
        run = await operator.coordinator.start_run(spec)
        state = await finished(operator.coordinator, run.run_id)

    assert state.run.status == pb.RUN_STATUS_FAILED
    assert state.run.failure_reason == "every round failed"
    assert (state.run.rounds_completed, state.run.rounds_failed) == (0, 2)
    assert state.run.model.version == initial
    for info in state.rounds:
        assert info.phase == pb.ROUND_PHASE_FAILED
        assert info.failure_reason == (
            "quorum missed: 7 of 10 selected nodes sent an update before the deadline; 8 required"
        )
        assert sorted(info.received) == NODES[:7]
        assert not info.HasField("result_model")
    versions = (await operator.registry.list_versions(model)).versions
    assert [v.ref.version for v in versions] == [initial]
    assert len(fleet.uploads) == 14
