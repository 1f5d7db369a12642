"""End to end with SecAgg+: the four services as subprocesses, 4 nodes, 2 secure FedAvg rounds."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

from fedmesh.cli.demo import MODEL_NAME, DemoSettings, NodeFleet, _publish_initial_model, _spec
from fedmesh.cli.stack import LocalStack
from fedmesh.client.coordinator import CoordinatorClient
from fedmesh.client.local_data import simulated_clients
from fedmesh.client.registry import RegistryClient
from fedmesh.proto.aggregator.v1 import aggregator_pb2 as agg_pb
from fedmesh.proto.aggregator.v1 import aggregator_pb2_grpc as agg_grpc
from fedmesh.proto.coordinator.v1 import coordinator_pb2 as pb
from fedmesh.proto.registry.v1 import registry_pb2 as reg_pb
from fedmesh.rpc import open_channel

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]
NODES = 4


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("secure-stack")) as running:
        yield running


SecureRun = tuple[pb.GetRunResponse, int, list[reg_pb.ModelVersion], agg_pb.GetStatusResponse]


async def _run_secure_rounds(stack: LocalStack) -> SecureRun:
    settings = DemoSettings(workdir=stack.workdir, report_dir=stack.workdir, nodes=NODES,
                            rounds=2, mesh_nodes=120, steps=80, local_epochs=2, seed=5,
                            collect_deadline_s=90.0, secure_aggregation=True)  # fmt: skip
    _, clients = await asyncio.to_thread(
        simulated_clients, settings.mesh(), NODES, settings.steps, 5
    )
    async with (
        open_channel(stack.services["registry"].address) as registry_channel,
        open_channel(stack.services["coordinator"].address) as coordinator_channel,
        open_channel(stack.services["aggregator"].address) as aggregator_channel,
    ):
        registry = RegistryClient(registry_channel)
        coordinator = CoordinatorClient(coordinator_channel)
        initial = await _publish_initial_model(registry, seed=5)
        fleet = NodeFleet(stack, clients, seed=5)
        await fleet.start()
        try:
            deadline = time.monotonic() + 60
            while (
                len([n for n in await coordinator.list_nodes() if n.state == pb.NODE_STATE_ONLINE])
                < NODES
            ):
                assert time.monotonic() < deadline, "nodes did not register"
                await asyncio.sleep(0.2)
            run = await coordinator.start_run(_spec(settings))
            deadline = time.monotonic() + 300
            while (
                state := await coordinator.get_run(run.run_id)
            ).run.status == pb.RUN_STATUS_RUNNING:
                assert time.monotonic() < deadline, f"run did not finish: {state}"
                await asyncio.sleep(0.5)
        finally:
            await fleet.stop()
        lineage = await registry.lineage(MODEL_NAME)
        status = await agg_grpc.AggregatorServiceStub(aggregator_channel).GetStatus(
            agg_pb.GetStatusRequest(), timeout=10
        )
    return state, initial, lineage, status


@pytest.fixture(scope="module")
def secure_run(stack: LocalStack) -> SecureRun:
    return asyncio.run(_run_secure_rounds(stack))


def test_secure_rounds_complete_from_masked_inputs_only(
    secure_run: SecureRun, stack: LocalStack
) -> None:
    state, initial, lineage, status = secure_run

    assert state.run.status == pb.RUN_STATUS_COMPLETED, stack.log_tail("aggregator")
    assert [r.phase for r in state.rounds] == [pb.ROUND_PHASE_COMPLETED] * 2
    assert all(sorted(r.received) == sorted(r.participants) for r in state.rounds)
    assert [r.result_model.version for r in state.rounds] == [initial + 1, initial + 2]
    # One bucket per round: each version's lineage names one secure sum, no node's update.
    published = [v for v in lineage if v.ref.version > initial]
    assert len(published) == 2
    assert all(len(v.participant_update_digests) == 1 for v in published)
    assert status.spooled_updates == 0


def test_the_aggregator_log_shows_stages_and_sums_but_no_update(
    secure_run: SecureRun, stack: LocalStack
) -> None:
    log = (stack.workdir / "logs" / "aggregator.log").read_text()
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    messages = [e.get("msg", "") for e in events]

    assert messages.count("secure aggregation finished") == 2
    assert "secure aggregation stage closed" in messages
    assert not any("masked_vector" in line for line in log.splitlines())
