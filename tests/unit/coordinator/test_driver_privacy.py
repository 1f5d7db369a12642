"""The control loop with privacy: the ε ledger, Poisson selection, secure rounds.

Real Redis and the real driver; only the aggregator is a fake port, as in test_driver.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis

from fedmesh.client.signing import NodeSigner
from fedmesh.privacy import SampledGaussianAccountant
from fedmesh.privacy.secagg.round_spec import ABORT_FIELD, ROUND_FIELD, SecureRoundSpec
from fedmesh.proto.coordinator.v1 import coordinator_pb2 as pb
from fedmesh.services.coordinator import convert
from fedmesh.services.coordinator.control import RunControl
from fedmesh.services.coordinator.driver import DriverSettings, RoundDriver
from fedmesh.services.coordinator.evaluations import EvaluationBoard
from fedmesh.services.coordinator.leadership import Replica
from fedmesh.services.coordinator.lease import LeaderLease
from fedmesh.services.coordinator.liveness import LivenessWatch
from fedmesh.services.coordinator.metrics import CoordinatorMetrics
from fedmesh.services.coordinator.nodes import NodeRegistry
from fedmesh.services.coordinator.ports import AggregateOutcome, Evaluation, Verdict
from fedmesh.services.coordinator.privacy_budget import PrivacyBudgets, budget_key, ledger
from fedmesh.services.coordinator.runs import ModelRef, Run, RunStatus, RunStore
from fedmesh.services.coordinator.selection import poisson_participants
from fedmesh.services.coordinator.servicer import CoordinatorServicer
from fedmesh.services.coordinator.spec import (
    PrivacySettings,
    RunSpec,
    SecureAggregationSettings,
)
from fedmesh.services.coordinator.task_feed import TaskFeed
from fedmesh.services.coordinator.tasks import TaskBoard
from fedmesh.store import Phase, Receipt, RoundStore

NOW = 1_800_000_000_000
BASE = ModelRef("detector", 4, "digest-4")
# z = 5 at q = 1, δ = 1e-5: ε after 1, 2, 3, 4 rounds is 0.795, 1.158, 1.446, 1.694.
# A budget of 1.5 affords three rounds and crosses 80 % (1.2) at the third.
TIGHT = PrivacySettings(enabled=True, noise_multiplier=5.0, epsilon_budget=1.5)


@dataclass
class Events:
    sent: list[tuple[str, dict[str, str], dict[str, str]]] = field(default_factory=list)

    async def emit(
        self,
        kind: str,
        labels: Mapping[str, str],
        annotations: Mapping[str, str] | None = None,
        resolve: bool = False,
    ) -> None:
        self.sent.append((kind, dict(labels), dict(annotations or {})))

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.sent]

    def only(self, kind: str) -> tuple[dict[str, str], dict[str, str]]:
        found = [(labels, notes) for k, labels, notes in self.sent if k == kind]
        assert len(found) == 1, f"{kind} sent {len(found)} times"
        return found[0]


@dataclass
class Aggregator:
    """Publishes base + 1 with the verdicts it is given."""

    verdicts: tuple[Verdict, ...] = ()

    async def aggregate_round(
        self,
        run_id: str,
        round_no: int,
        fencing_token: int,
        spec: RunSpec,
        base_model: ModelRef,
        trace_carrier: Mapping[str, str],
    ) -> AggregateOutcome:
        model = ModelRef(base_model.name, base_model.version + 1, f"digest-{round_no}")
        return AggregateOutcome(model, list(self.verdicts), 0.5, 0.0)


@dataclass
class World:
    redis: aioredis.Redis
    runs: RunStore
    rounds: RoundStore
    nodes: NodeRegistry
    budgets: PrivacyBudgets
    aggregator: Aggregator
    events: Events
    driver: RoundDriver
    keys: dict[str, bytes] = field(default_factory=dict)

    def another_driver(self, events: Events) -> RoundDriver:
        """A second replica's driver over the same Redis (a new leader)."""
        return make_driver(self.redis, self.aggregator, events)

    async def register(self, count: int) -> None:
        for index in range(count):
            node_id = f"node-{index:02d}"
            self.keys[node_id] = NodeSigner.generate().public_key
            await self.nodes.register(node_id, 100, "north", {}, NOW, self.keys[node_id])

    async def start(self, nodes: int = 3, **changes: object) -> Run:
        await self.register(nodes)
        spec = RunSpec(
            model_name=BASE.name, rounds=2, min_participants=3, target_participants=3,
            over_selection=0.0, collect_deadline_s=60, aggregate_deadline_s=30,
        )  # fmt: skip
        # Created directly, as admission would have let it through (or as it was stored).
        return await self.runs.create(dataclasses.replace(spec, **changes), BASE, NOW)  # type: ignore[arg-type]

    async def settled(self, run_id: str, round_no: int, phase: Phase) -> None:
        for _ in range(200):
            if (await self.rounds.get(run_id, round_no)).phase is phase:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"round {round_no} never reached {phase}")


def make_driver(redis: aioredis.Redis, aggregator: Aggregator, events: Events) -> RoundDriver:
    return RoundDriver(
        RunStore(redis), RoundStore(redis), NodeRegistry(redis), TaskBoard(redis), aggregator,
        events, DriverSettings("127.0.0.1:7", stale_after_ms=30_000), CoordinatorMetrics(),
        clock=lambda: NOW, budgets=PrivacyBudgets(redis),
    )  # fmt: skip


@pytest.fixture
def world(redis_client: aioredis.Redis) -> World:
    events, aggregator = Events(), Aggregator()
    return World(
        redis_client,
        RunStore(redis_client),
        RoundStore(redis_client),
        NodeRegistry(redis_client),
        PrivacyBudgets(redis_client),
        aggregator,
        events,
        make_driver(redis_client, aggregator, events),
    )


def epsilon(rounds: int, z: float = 5.0, q: float = 1.0) -> float:
    return SampledGaussianAccountant(q, z, 1e-5).epsilon_spent(rounds)


# --- the ledger -------------------------------------------------------------------------------


async def test_a_round_is_charged_once_whoever_charges_it(redis_client: aioredis.Redis) -> None:
    first, second = PrivacyBudgets(redis_client), PrivacyBudgets(redis_client)

    assert await first.charge("run-1", 1) is True
    assert await second.charge("run-1", 1) is False
    assert await first.charge("run-1", 2) is True
    assert await second.charge("run-1", 1) is False  # an older round changes nothing
    assert await first.rounds_charged("run-1") == 2
    assert await first.rounds_charged("run-2") == 0
    assert budget_key("run-1") == "fm:{run:run-1}:privacy"
    assert await redis_client.hgetall(budget_key("run-1")) == {"rounds": "2"}


async def test_the_state_is_epsilon_after_the_rounds_charged(redis_client: aioredis.Redis) -> None:
    budgets = PrivacyBudgets(redis_client)
    await budgets.charge("run-1", 3)

    state = await budgets.state("run-1", TIGHT)

    assert state.rounds_charged == 3
    assert state.epsilon_spent == pytest.approx(epsilon(3))
    assert (state.epsilon_budget, state.delta) == (1.5, 1e-5)


async def test_a_private_run_stops_at_the_round_its_budget_cannot_afford(world: World) -> None:
    # Two nodes for a quorum of three: every round fails at once, and every opened round counts.
    run = await world.start(nodes=2, rounds=5, privacy=TIGHT)

    for _ in range(6):
        await world.driver.tick(fencing_token=1)

    finished = await world.runs.get(run.run_id)
    assert finished.status is RunStatus.FAILED
    assert finished.failure_reason == (
        "round 4 would exceed the privacy budget: ε 1.446 → 1.694 at δ=1e-05, "
        "budget ε=1.5 (112.9% after the round)"
    )
    assert finished.failure_reason == ledger(TIGHT, 3).check_next_round().reason
    assert (finished.current_round, finished.rounds_failed) == (3, 3)
    assert not await world.rounds.exists(run.run_id, 4)
    assert await world.budgets.rounds_charged(run.run_id) == 3
    assert world.events.kinds() == [
        *["quorum_missed", "round_failed"] * 2,
        "privacy_budget_80",
        "quorum_missed",
        "round_failed",
        "run_finished",
        "privacy_budget_exhausted",
    ]
    labels, notes = world.events.only("privacy_budget_80")
    assert labels == {"run": run.run_id}
    assert (notes["epsilon_spent"], notes["epsilon_budget"], notes["round"]) == (
        "1.446",
        "1.5",
        "3",
    )
    labels, notes = world.events.only("privacy_budget_exhausted")
    assert labels == {"run": run.run_id}
    assert (notes["epsilon_spent"], notes["refused_round"]) == ("1.446", "4")
    assert notes["reason"] == finished.failure_reason


async def test_a_run_whose_budget_affords_every_round_is_not_stopped(world: World) -> None:
    run = await world.start(nodes=2, rounds=3, privacy=TIGHT)

    for _ in range(5):
        await world.driver.tick(fencing_token=1)

    finished = await world.runs.get(run.run_id)
    assert (finished.status, finished.failure_reason) == (RunStatus.FAILED, "every round failed")
    assert world.events.kinds().count("privacy_budget_80") == 1
    assert "privacy_budget_exhausted" not in world.events.kinds()
    assert await world.budgets.rounds_charged(run.run_id) == 3


async def test_two_leaders_stepping_at_once_charge_and_alert_once(world: World) -> None:
    run = await world.start(nodes=2, rounds=5, privacy=TIGHT)
    other_events = Events()
    other = world.another_driver(other_events)

    for _ in range(8):
        await asyncio.gather(world.driver.tick(fencing_token=1), other.tick(fencing_token=1))

    both = world.events.kinds() + other_events.kinds()
    assert both.count("privacy_budget_80") == 1
    assert both.count("privacy_budget_exhausted") == 1
    assert both.count("run_finished") == 1
    assert both.count("round_failed") == 3
    finished = await world.runs.get(run.run_id)
    assert (finished.status, finished.rounds_failed) == (RunStatus.FAILED, 3)
    assert await world.budgets.rounds_charged(run.run_id) == 3


async def test_a_new_leader_repeating_a_charged_round_does_not_charge_or_alert_again(
    world: World,
) -> None:
    run = await world.start(nodes=3, rounds=5, privacy=TIGHT)
    await world.runs.advance(run.run_id, 2)  # rounds 1 and 2 are history
    await world.rounds.create(run.run_id, 2, [], NOW, NOW, {"base_model": BASE.to_json()})
    await world.rounds.transition(run.run_id, 2, Phase.PENDING, Phase.FAILED)
    await world.runs.round_closed(run.run_id, 2, False, None)
    # The old leader charged round 3 and raised the 80 % alert, then died before creating it.
    await world.budgets.charge(run.run_id, 3)
    successor_events = Events()

    await world.another_driver(successor_events).tick(fencing_token=2)

    assert (await world.rounds.get(run.run_id, 3)).phase is Phase.COLLECTING
    assert await world.budgets.rounds_charged(run.run_id) == 3
    assert "privacy_budget_80" not in successor_events.kinds()


async def test_a_run_without_privacy_has_no_ledger(world: World) -> None:
    run = await world.start(nodes=2, rounds=1)

    await world.driver.tick(fencing_token=1)

    assert await world.budgets.rounds_charged(run.run_id) == 0
    assert not await world.redis.exists(budget_key(run.run_id))


# --- Poisson selection ------------------------------------------------------------------------


POISSON = PrivacySettings(enabled=True, noise_multiplier=5.0, epsilon_budget=50.0)


async def test_a_private_run_with_a_sampling_rate_draws_by_poisson(world: World) -> None:
    privacy = dataclasses.replace(POISSON, sampling_rate=0.5)
    run = await world.start(nodes=20, privacy=privacy, seed=9, target_participants=3)

    await world.driver.tick(fencing_token=1)

    eligible = [n for n in await world.nodes.all()]
    expected = poisson_participants(eligible, 0.5, seed=9, round_no=1)
    record = await world.rounds.get(run.run_id, 1)
    assert sorted(record.participants) == expected
    assert len(expected) != 3  # neither the target nor the target with over-selection


async def test_a_poisson_draw_below_the_quorum_fails_the_round_with_why(world: World) -> None:
    privacy = dataclasses.replace(POISSON, sampling_rate=0.05)
    eligible_count = 10
    await world.register(eligible_count)
    eligible = await world.nodes.all()
    seed = next(
        s for s in range(100) if len(poisson_participants(eligible, 0.05, s, round_no=1)) < 3
    )
    drawn = len(poisson_participants(eligible, 0.05, seed, round_no=1))
    run = await world.start(nodes=0, rounds=1, privacy=privacy, seed=seed)

    await world.driver.tick(fencing_token=1)

    record = await world.rounds.get(run.run_id, 1)
    assert record.phase is Phase.FAILED
    assert record.fields["failure_reason"] == (
        f"quorum missed: the Poisson draw at rate 0.05 of 10 eligible nodes selected {drawn}; "
        "3 required"
    )
    assert record.fields["failure_kind"] == "quorum"
    assert record.participants == frozenset()
    assert world.events.kinds()[:2] == ["quorum_missed", "round_failed"]


async def test_a_private_run_without_a_sampling_rate_selects_by_trust(world: World) -> None:
    run = await world.start(nodes=10, privacy=POISSON, target_participants=4)

    await world.driver.tick(fencing_token=1)

    assert len((await world.rounds.get(run.run_id, 1)).participants) == 4


# --- secure rounds ----------------------------------------------------------------------------


SECURE = SecureAggregationSettings(
    enabled=True, threshold=2, neighbours=2, bucket_size=3, min_survivors=2
)


async def test_a_secure_round_carries_its_contract_for_the_aggregator(world: World) -> None:
    privacy = dataclasses.replace(POISSON, clip_norm=0.5, noise_multiplier=1.2)
    run = await world.start(secure_aggregation=SECURE, privacy=privacy, collect_deadline_s=90)

    await world.driver.tick(fencing_token=1)

    fields = (await world.rounds.get(run.run_id, 1)).fields
    assert SecureRoundSpec.from_json(fields[ROUND_FIELD]) == SecureRoundSpec(
        threshold=2,
        neighbours=2,
        bucket_size=3,
        min_survivors=2,
        clip_range=1.0,
        noise_stddev=0.6,  # z·C, exact: halving is exact in binary
        stage_timeout_s=15.0,
    )


async def test_a_secure_round_without_privacy_has_no_noise_and_a_floor_on_stage_time(
    world: World,
) -> None:
    settings = dataclasses.replace(SECURE, clip_range=4.0)
    run = await world.start(secure_aggregation=settings, collect_deadline_s=3)

    await world.driver.tick(fencing_token=1)

    spec = SecureRoundSpec.from_json((await world.rounds.get(run.run_id, 1)).fields[ROUND_FIELD])
    assert (spec.clip_range, spec.noise_stddev, spec.stage_timeout_s) == (4.0, 0.0, 1.0)


async def test_a_plain_round_has_no_secure_contract(world: World) -> None:
    run = await world.start()

    await world.driver.tick(fencing_token=1)

    assert ROUND_FIELD not in (await world.rounds.get(run.run_id, 1)).fields


async def test_every_round_records_its_participants_signing_keys(world: World) -> None:
    run = await world.start(nodes=5)

    await world.driver.tick(fencing_token=1)

    record = await world.rounds.get(run.run_id, 1)
    assert len(record.participants) == 3
    assert json.loads(record.fields["signing_keys"]) == {
        node: world.keys[node].hex() for node in record.participants
    }
    task = await TaskBoard(world.redis).pending(sorted(record.participants)[0])
    assert task is not None
    assert task.peer_signing_keys == {}  # only secure rounds need them on the node


async def test_a_secure_task_carries_every_participants_key(world: World) -> None:
    run = await world.start(secure_aggregation=SECURE)

    await world.driver.tick(fencing_token=1)

    record = await world.rounds.get(run.run_id, 1)
    expected = {node: world.keys[node].hex() for node in record.participants}
    for node in record.participants:
        task = await TaskBoard(world.redis).pending(node)
        assert task is not None
        assert task.peer_signing_keys == expected
        assert dict(convert.task_to_proto(task).peer_signing_keys) == {
            n: world.keys[n] for n in record.participants
        }


async def test_a_node_registered_without_a_signing_key_is_not_selected(world: World) -> None:
    run = await world.start(nodes=3, target_participants=4)
    # A record written before nodes had keys: online and trusted, but it cannot sign.
    await world.redis.hset(
        "fm:node:legacy",
        mapping={"trust": "1.0", "evidence_count": "0", "banned": "0", "samples": "100",
                 "region": "north", "capabilities": "{}", "last_heartbeat_unix_ms": str(NOW)},
    )  # fmt: skip
    await world.redis.sadd("fm:nodes", "legacy")

    await world.driver.tick(fencing_token=1)

    record = await world.rounds.get(run.run_id, 1)
    assert sorted(record.participants) == ["node-00", "node-01", "node-02"]


async def test_an_aborted_secure_round_fails_at_once_with_the_reason(world: World) -> None:
    run = await world.start(secure_aggregation=SECURE)
    await world.driver.tick(fencing_token=1)
    # What the aggregator does when a bucket's SecAgg+ session aborts (long before the deadline).
    await world.redis.hset(
        f"fm:{{run:{run.run_id}}}:round:1", ABORT_FIELD, "bucket 0: 1 input survived, 2 required"
    )

    await world.driver.tick(fencing_token=1)

    record = await world.rounds.get(run.run_id, 1)
    assert record.phase is Phase.FAILED
    assert record.fields["failure_reason"] == (
        "secure aggregation aborted: bucket 0: 1 input survived, 2 required"
    )
    assert record.fields["failure_kind"] == "secure_aggregation"
    assert world.events.kinds() == ["round_failed"]
    assert (await world.runs.get(run.run_id)).rounds_failed == 1


async def test_bucket_verdicts_never_count_against_a_node(world: World) -> None:
    world.aggregator.verdicts = (
        Verdict("", excluded=True, reason="bucket 1 excluded by krum"),
        Verdict("", excluded=False, reason="bucket 0 kept", score=1.0),
    )
    run = await world.start(rounds=1, secure_aggregation=SECURE)
    await world.driver.tick(fencing_token=1)
    for node in ("node-00", "node-01", "node-02"):
        await world.rounds.record_receipt(
            run.run_id, 1, Receipt(node, f"d-{node}", 100, 10, 0.5, NOW)
        )

    await world.driver.tick(fencing_token=1)
    await world.settled(run.run_id, 1, Phase.COMPLETED)

    record = await world.rounds.get(run.run_id, 1)
    assert json.loads(record.fields["excluded"]) == [
        {"node_id": "", "reason": "bucket 1 excluded by krum"}
    ]
    assert json.loads(record.fields["evidence"]) == []
    assert [n.evidence_count for n in await world.nodes.all()] == [0, 0, 0]
    assert "byzantine_suspected" not in world.events.kinds()


# --- GetRun shows ε spent ---------------------------------------------------------------------


@dataclass
class NoCatalog:
    async def latest(self, name: str) -> ModelRef | None:
        return BASE

    async def record_evaluation(self, model: ModelRef, evaluation: Evaluation) -> None:
        return None


class DevProfileCall:
    """The servicer context of a plaintext (dev profile) call: no peer certificate."""

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}


def servicer(world: World) -> CoordinatorServicer:
    redis, metrics = world.redis, CoordinatorMetrics()
    replica = Replica(
        LeaderLease(redis, "replica-a", 1000),
        world.driver,
        LivenessWatch(redis, world.nodes, world.events, 30_000),
        0.05,
        metrics,
    )
    evaluations = EvaluationBoard(redis)
    control = RunControl(
        world.runs, world.rounds, world.nodes, evaluations, NoCatalog(), 30_000, lambda: NOW
    )
    return CoordinatorServicer(
        control, world.runs, world.rounds, world.nodes, TaskFeed(TaskBoard(redis), 0.05),
        evaluations, replica, 1.0, 30_000, lambda: NOW, world.budgets,
    )  # fmt: skip


async def test_get_run_shows_the_epsilon_of_the_rounds_charged(world: World) -> None:
    run = await world.start(nodes=2, rounds=5, privacy=TIGHT)
    for _ in range(2):
        await world.driver.tick(fencing_token=1)

    with_ledger = await servicer(world).GetRun(
        pb.GetRunRequest(run_id=run.run_id), DevProfileCall()
    )

    assert with_ledger.run.epsilon_spent == pytest.approx(epsilon(2))
    assert with_ledger.run.spec.privacy.epsilon_budget == 1.5
    assert with_ledger.run.spec.privacy.delta == 1e-5


async def test_get_run_of_a_run_without_privacy_shows_no_epsilon(world: World) -> None:
    run = await world.start(nodes=2, rounds=1)
    await world.driver.tick(fencing_token=1)

    response = await servicer(world).GetRun(pb.GetRunRequest(run_id=run.run_id), DevProfileCall())

    assert response.run.epsilon_spent == 0.0
