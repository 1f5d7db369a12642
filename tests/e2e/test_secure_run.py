"""End to end with SecAgg+: the four services as subprocesses, 4 nodes, 2 secure FedAvg rounds."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

from fedmesh.cli.demo import MODEL_NAME, DemoSettings, NodeFleet, _publish_initial_model, _spec
from fedmesh.cli.stack import LocalStack
from fedmesh.client.alerting import Alert, AlertingClient
from fedmesh.client.coordinator import CoordinatorClient
from fedmesh.client.local_data import simulated_clients
from fedmesh.client.registry import RegistryClient
from fedmesh.privacy import SampledGaussianAccountant
from fedmesh.proto.aggregator.v1 import aggregator_pb2 as agg_pb
from fedmesh.proto.aggregator.v1 import aggregator_pb2_grpc as agg_grpc
from fedmesh.proto.common.v1 import common_pb2 as common
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
# DP on top: σ = z·C = 0.5 in shares σ/√3 over at least 3 survivors; the range covers 6 shares' σ.
PRIVACY = common.PrivacySpec(enabled=True, clip_norm=0.5, noise_multiplier=1.0, delta=1e-5)
TWO_ROUNDS_EPSILON = SampledGaussianAccountant(1.0, 1.0, 1e-5).epsilon_spent(2)


def _settings(stack: LocalStack) -> DemoSettings:
    return DemoSettings(workdir=stack.workdir, report_dir=stack.workdir, nodes=NODES, rounds=2,
                        mesh_nodes=120, steps=80, local_epochs=2, seed=5, collect_deadline_s=90.0,
                        secure_aggregation=True)  # fmt: skip


def _private_spec(stack: LocalStack) -> pb.RunSpec:
    spec = _spec(_settings(stack))
    spec.privacy.CopyFrom(PRIVACY)
    # The second round crosses 80 % of the budget: the PrivacyBudgetLow alert must fire.
    spec.privacy.epsilon_budget = TWO_ROUNDS_EPSILON / 0.85
    spec.secure_aggregation.min_survivors = 3
    spec.secure_aggregation.clip_range = 0.5 + 6 * 0.5 / 3**0.5
    return spec


async def _run_secure_rounds(stack: LocalStack, spec: pb.RunSpec) -> SecureRun:
    settings = _settings(stack)
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
            run = await coordinator.start_run(spec)
            deadline = time.monotonic() + 300
            while (
                state := await coordinator.get_run(run.run_id)
            ).run.status == pb.RUN_STATUS_RUNNING:
                assert time.monotonic() < deadline, f"run did not finish: {state}"
                await asyncio.sleep(0.5)
        finally:
            await fleet.stop()
        lineage = await registry.lineage(MODEL_NAME, state.run.model.version)
        status = await agg_grpc.AggregatorServiceStub(aggregator_channel).GetStatus(
            agg_pb.GetStatusRequest(), timeout=10
        )
    return state, initial, lineage, status


@pytest.fixture(scope="module")
def secure_run(stack: LocalStack) -> SecureRun:
    return asyncio.run(_run_secure_rounds(stack, _spec(_settings(stack))))


@pytest.fixture(scope="module")
def private_secure_run(stack: LocalStack, secure_run: SecureRun) -> SecureRun:
    return asyncio.run(_run_secure_rounds(stack, _private_spec(stack)))


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


def test_a_private_secure_run_records_epsilon_and_raises_the_80_percent_alert(
    private_secure_run: SecureRun, stack: LocalStack
) -> None:
    state, initial, lineage, _ = private_secure_run

    assert state.run.status == pb.RUN_STATUS_COMPLETED, stack.log_tail("coordinator")
    published = sorted((v for v in lineage if v.ref.version > initial), key=lambda v: v.round)
    per_round = [SampledGaussianAccountant(1.0, 1.0, 1e-5).epsilon_spent(r) for r in (1, 2)]
    assert [v.epsilon_spent for v in published] == pytest.approx(per_round)
    assert all(v.delta == pytest.approx(1e-5) for v in published)
    assert state.run.epsilon_spent == pytest.approx(TWO_ROUNDS_EPSILON)
    alerts = asyncio.run(_alerts(stack, state.run.run_id))
    assert [a.name for a in alerts] == ["PrivacyBudgetLow"]


async def _alerts(stack: LocalStack, run_id: str) -> list[Alert]:
    async with open_channel(stack.services["alerting"].address) as channel:
        found = await AlertingClient(channel).list_alerts(labels={"run": run_id})
    return [a for a in found if a.name.startswith("PrivacyBudget")]
