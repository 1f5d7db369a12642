"""The control loop against the real Redis, the aggregator port faked: what a new leader finds
half done (a round created but not recorded, a round closed but not applied) it finishes once."""

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis

from fedmesh.client.signing import NodeSigner
from fedmesh.errors import FailedPrecondition
from fedmesh.services.coordinator.driver import DriverSettings, RoundDriver
from fedmesh.services.coordinator.metrics import CoordinatorMetrics
from fedmesh.services.coordinator.nodes import NodeRegistry
from fedmesh.services.coordinator.ports import AggregateOutcome, Verdict
from fedmesh.services.coordinator.privacy_budget import PrivacyBudgets
from fedmesh.services.coordinator.runs import ModelRef, Run, RunStatus, RunStore
from fedmesh.services.coordinator.spec import AggregationSettings, RunSpec
from fedmesh.services.coordinator.tasks import TaskBoard
from fedmesh.store import Phase, Receipt, RoundStore

NOW = 1_800_000_000_000
BASE = ModelRef("detector", 4, "digest-4")
SIGNERS = [NodeSigner.generate() for _ in range(4)]


@dataclass
class Events:
    sent: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    async def emit(
        self,
        kind: str,
        labels: Mapping[str, str],
        annotations: Mapping[str, str] | None = None,
        resolve: bool = False,
    ) -> None:
        self.sent.append((kind, dict(labels)))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.sent]


@dataclass
class Aggregator:
    """Publishes base + 1, or refuses as a registry does a stale token."""

    refuse: str = ""
    excluded: tuple[str, ...] = ()
    calls: list[tuple[str, int, int]] = field(default_factory=list)
    hold: asyncio.Event | None = None

    async def aggregate_round(
        self,
        run_id: str,
        round_no: int,
        fencing_token: int,
        spec: RunSpec,
        base_model: ModelRef,
        trace_carrier: Mapping[str, str],
    ) -> AggregateOutcome:
        self.calls.append((run_id, round_no, fencing_token))
        if self.hold is not None:
            await self.hold.wait()
        if self.refuse:
            raise FailedPrecondition(self.refuse)
        model = ModelRef(base_model.name, base_model.version + 1, f"digest-{round_no}")
        verdicts = [Verdict(node, True, "excluded by krum") for node in self.excluded]
        return AggregateOutcome(model, verdicts, 0.5, 0.0)


@dataclass
class World:
    runs: RunStore
    rounds: RoundStore
    nodes: NodeRegistry
    tasks: TaskBoard
    events: Events
    aggregator: Aggregator
    metrics: CoordinatorMetrics
    driver: RoundDriver

    async def start(self, rounds: int = 2, nodes: int = 3, bucket_size: int = 0) -> Run:
        for index in range(nodes):
            await self.nodes.register(
                f"node-{index}", 100, "north", {}, NOW, SIGNERS[index].public_key
            )
        spec = RunSpec(
            model_name=BASE.name, rounds=rounds, min_participants=3, target_participants=3,
            over_selection=0.0, collect_deadline_s=60, aggregate_deadline_s=30,
            aggregation=AggregationSettings(bucket_size=bucket_size),
        )  # fmt: skip
        return await self.runs.create(spec, BASE, NOW)

    async def settled(self, run_id: str, round_no: int, phase: Phase) -> None:
        for _ in range(200):
            if (await self.rounds.get(run_id, round_no)).phase is phase:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"round {round_no} never reached {phase}")


@pytest.fixture
def world(redis_client: aioredis.Redis) -> World:
    runs, rounds, nodes = (
        RunStore(redis_client),
        RoundStore(redis_client),
        NodeRegistry(redis_client),
    )
    tasks, events, aggregator, metrics = (
        TaskBoard(redis_client),
        Events(),
        Aggregator(),
        CoordinatorMetrics(),
    )
    driver = RoundDriver(
        runs, rounds, nodes, tasks, aggregator, events,
        DriverSettings("127.0.0.1:7", stale_after_ms=30_000), metrics,
        PrivacyBudgets(redis_client), clock=lambda: NOW,
    )  # fmt: skip
    return World(runs, rounds, nodes, tasks, events, aggregator, metrics, driver)


def metric(world: World, name: str, **labels: str) -> float | None:
    return world.metrics.registry.get_sample_value(name, labels)


async def test_a_round_created_by_a_leader_that_died_is_adopted(world: World) -> None:
    run = await world.start()
    participants = ["node-0", "node-1", "node-2"]
    fields = {"base_model": BASE.to_json(), "kind": "TRAIN"}
    await world.rounds.create(run.run_id, 1, participants, NOW + 60_000, NOW, fields)

    await world.driver.tick(fencing_token=2)
    adopted = await world.runs.get(run.run_id)
    await world.driver.tick(fencing_token=2)
    record = await world.rounds.get(run.run_id, 1)

    assert adopted.current_round == 1
    assert record.phase is Phase.COLLECTING
    assert sorted(record.participants) == participants
    assert record.deadline_unix_ms == NOW + 60_000
    task = await world.tasks.pending("node-1")
    assert task is not None
    assert task.task_id == f"{run.run_id}/1/train/node-1"
    assert not await world.rounds.exists(run.run_id, 2)


async def test_storing_a_rounds_tasks_again_keeps_their_ids(world: World) -> None:
    run = await world.start()
    await world.driver.tick(fencing_token=1)
    first = await world.tasks.pending("node-0")
    record = await world.rounds.get(run.run_id, 1)
    await world.rounds.transition(run.run_id, 1, Phase.COLLECTING, Phase.PENDING)

    await world.driver.tick(fencing_token=2)

    again = await world.tasks.pending("node-0")
    assert first is not None
    assert again is not None
    assert again.task_id == first.task_id == f"{run.run_id}/1/train/node-0"
    assert (await world.rounds.get(run.run_id, 1)).participants == record.participants


async def test_a_round_closed_by_a_leader_that_died_is_applied_once(world: World) -> None:
    run = await world.start()
    await world.driver.tick(fencing_token=1)
    result = ModelRef(BASE.name, BASE.version + 1, "digest-1")
    excluded = [{"node_id": "node-2", "reason": "excluded by krum"}]
    await world.rounds.transition(run.run_id, 1, Phase.COLLECTING, Phase.AGGREGATING)
    await world.rounds.transition(
        run.run_id, 1, Phase.AGGREGATING, Phase.COMPLETED,
        {"result_model": result.to_json(), "excluded": json.dumps(excluded),
         "evidence": json.dumps(excluded), "closed_unix_ms": str(NOW)},
    )  # fmt: skip

    await world.driver.tick(fencing_token=2)
    await world.driver.tick(fencing_token=2)

    after = await world.runs.get(run.run_id)
    assert (after.rounds_completed, after.rounds_failed, after.model) == (1, 0, result)
    assert after.current_round == 2
    second = await world.rounds.get(run.run_id, 2)
    assert ModelRef.from_json(second.fields["base_model"]) == result
    node = await world.nodes.get("node-2")
    assert node.evidence_count == 1
    assert node.trust == pytest.approx(0.8)
    assert world.events.kinds().count("byzantine_suspected") == 1
    assert await world.tasks.pending("node-0") is not None  # round 2's, round 1's were cleared
    assert metric(world, "fedmesh_coordinator_rounds_closed_total", outcome="completed") == 1


async def test_a_round_without_quorum_fails_with_its_reason(world: World) -> None:
    run = await world.start(rounds=1, nodes=2)

    await world.driver.tick(fencing_token=1)
    await world.driver.tick(fencing_token=1)

    record = await world.rounds.get(run.run_id, 1)
    assert record.phase is Phase.FAILED
    assert record.fields["failure_reason"] == "quorum missed: 2 eligible nodes, 3 required"
    assert record.participants == frozenset()
    finished = await world.runs.get(run.run_id)
    assert (finished.status.value, finished.failure_reason) == ("FAILED", "every round failed")
    assert world.events.kinds() == ["quorum_missed", "round_failed", "run_finished"]
    assert metric(world, "fedmesh_coordinator_rounds_closed_total", outcome="failed") == 1


async def test_the_aggregation_deadline_is_stored_with_the_phase(world: World) -> None:
    run = await world.start(rounds=1)
    await world.driver.tick(fencing_token=3)
    for node in ("node-0", "node-1", "node-2"):
        await world.rounds.record_receipt(
            run.run_id, 1, Receipt(node, f"d-{node}", 100, 10, 0.5, NOW)
        )

    await world.driver.tick(fencing_token=3)
    await world.settled(run.run_id, 1, Phase.COMPLETED)

    record = await world.rounds.get(run.run_id, 1)
    assert record.deadline_unix_ms == NOW + 30_000
    assert record.fields["collected_unix_ms"] == str(NOW)
    assert world.aggregator.calls == [(run.run_id, 1, 3)]
    assert (await world.runs.get(run.run_id)).model.version == BASE.version + 1


async def test_a_deposed_leader_leaves_the_round_to_its_successor(world: World) -> None:
    run = await world.start(rounds=1)
    world.aggregator.refuse = (
        "AggregateRound of round 1 refused: fencing token 3 is stale; the current leader holds 4"
    )
    await world.driver.tick(fencing_token=3)
    for node in ("node-0", "node-1", "node-2"):
        await world.rounds.record_receipt(
            run.run_id, 1, Receipt(node, f"d-{node}", 100, 10, 0.5, NOW)
        )

    await world.driver.tick(fencing_token=3)
    await asyncio.sleep(0.05)
    await world.driver.cancel()

    assert (await world.rounds.get(run.run_id, 1)).phase is Phase.AGGREGATING
    assert world.events.kinds() == []


async def test_a_round_stopped_while_the_aggregator_publishes_stays_failed_with_the_stop_reason(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    run = await world.start(rounds=2)
    world.aggregator.hold = asyncio.Event()
    await world.driver.tick(fencing_token=3)
    for node in ("node-0", "node-1", "node-2"):
        await world.rounds.record_receipt(
            run.run_id, 1, Receipt(node, f"d-{node}", 100, 10, 0.5, NOW)
        )
    await world.driver.tick(fencing_token=3)  # AGGREGATING; the aggregator is publishing
    await world.runs.finish(run.run_id, RunStatus.STOPPED, "run stopped by operator: test")
    await world.rounds.transition(
        run.run_id, 1, Phase.AGGREGATING, Phase.FAILED, {"failure_reason": "stopped"}
    )

    world.aggregator.hold.set()
    for _ in range(200):
        if "its published version is not the run's model" in caplog.text:
            break
        await asyncio.sleep(0.01)

    record = await world.rounds.get(run.run_id, 1)
    stopped = await world.runs.get(run.run_id)
    assert "its published version is not the run's model" in caplog.text
    assert (record.phase, record.fields["failure_reason"]) == (Phase.FAILED, "stopped")
    assert (stopped.status, stopped.model) == (RunStatus.STOPPED, BASE)


async def test_exclusions_of_a_bucketed_rule_are_no_evidence_against_a_node(world: World) -> None:
    run = await world.start(rounds=1, bucket_size=2)
    world.aggregator.excluded = ("node-1", "node-2")  # one excluded bucket of two updates
    await world.driver.tick(fencing_token=3)
    for node in ("node-0", "node-1", "node-2"):
        await world.rounds.record_receipt(
            run.run_id, 1, Receipt(node, f"d-{node}", 100, 10, 0.5, NOW)
        )

    await world.driver.tick(fencing_token=3)
    await world.settled(run.run_id, 1, Phase.COMPLETED)

    record = await world.rounds.get(run.run_id, 1)
    assert [e["node_id"] for e in json.loads(record.fields["excluded"])] == ["node-1", "node-2"]
    assert json.loads(record.fields["evidence"]) == []
    assert [(await world.nodes.get(n)).evidence_count for n in ("node-1", "node-2")] == [0, 0]
    assert "byzantine_suspected" not in world.events.kinds()
