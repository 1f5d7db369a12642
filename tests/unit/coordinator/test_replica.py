"""The replica loop: the lease is renewed while a tick is slow, and a lost lease stops driving."""

import asyncio

import redis.asyncio as aioredis

from fedmesh.services.coordinator.driver import DriverSettings, RoundDriver
from fedmesh.services.coordinator.leadership import Replica
from fedmesh.services.coordinator.lease import LeaderLease
from fedmesh.services.coordinator.liveness import LivenessWatch
from fedmesh.services.coordinator.metrics import CoordinatorMetrics
from fedmesh.services.coordinator.nodes import NodeRegistry
from fedmesh.services.coordinator.ports import AggregateOutcome
from fedmesh.services.coordinator.privacy_budget import PrivacyBudgets
from fedmesh.services.coordinator.runs import RunStore
from fedmesh.services.coordinator.tasks import TaskBoard
from fedmesh.stopping import stop
from fedmesh.store import RoundStore, keys


class NoEvents:
    async def emit(self, *args: object, **kwargs: object) -> None:
        return None


class NoAggregator:
    async def aggregate_round(self, *args: object) -> AggregateOutcome:
        raise AssertionError("no round reaches aggregation here")


class SlowDriver(RoundDriver):
    """A driver whose every tick takes ``tick_s`` (a slow peer, many runs)."""

    def __init__(self, redis: aioredis.Redis, metrics: CoordinatorMetrics, tick_s: float) -> None:
        super().__init__(
            RunStore(redis), RoundStore(redis), NodeRegistry(redis), TaskBoard(redis),
            NoAggregator(), NoEvents(), DriverSettings("127.0.0.1:1", 30_000), metrics,
            PrivacyBudgets(redis),
        )  # fmt: skip
        self.tick_s = tick_s
        self.tokens: list[int] = []
        self.started = asyncio.Event()
        self.interrupted = asyncio.Event()

    async def tick(self, fencing_token: int) -> None:
        self.tokens.append(fencing_token)
        self.started.set()
        try:
            await asyncio.sleep(self.tick_s)
        except asyncio.CancelledError:
            self.interrupted.set()
            raise


def replica(redis: aioredis.Redis, replica_id: str, ttl_ms: int, tick_s: float) -> Replica:
    metrics = CoordinatorMetrics()
    return Replica(
        LeaderLease(redis, replica_id, ttl_ms),
        SlowDriver(redis, metrics, tick_s),
        LivenessWatch(redis, NodeRegistry(redis), NoEvents(), 30_000),
        tick_s=0.02,
        metrics=metrics,
    )


async def test_the_lease_outlives_a_tick_longer_than_the_lease(
    redis_client: aioredis.Redis,
) -> None:
    leader = replica(redis_client, "a", ttl_ms=200, tick_s=1.0)
    rival = LeaderLease(redis_client, "b", ttl_ms=200)
    loop = asyncio.create_task(leader.run())

    attempts = []
    for _ in range(8):
        await asyncio.sleep(0.1)
        attempts.append((await rival.attempt()).leader)
    await stop(loop)

    assert attempts == [False] * 8
    assert leader.state.leadership.fencing_token == 1
    assert await redis_client.get(keys.leader_key()) is None, "released on stop"


async def test_a_replica_that_loses_the_lease_stops_driving(redis_client: aioredis.Redis) -> None:
    leader = replica(redis_client, "a", ttl_ms=5_000, tick_s=10.0)
    driver = leader._driver
    assert isinstance(driver, SlowDriver)
    loop = asyncio.create_task(leader.run())
    await asyncio.wait_for(driver.started.wait(), 5)

    await redis_client.set(keys.leader_key(), "b", px=5_000)  # another replica took over
    await asyncio.wait_for(driver.interrupted.wait(), 5)
    await stop(loop)

    assert driver.tokens == [1]
    assert leader.state.leadership.holder == "b"
    assert await redis_client.get(keys.leader_key()) == "b", "a standby releases nothing"
    assert leader._metrics.registry.get_sample_value("fedmesh_coordinator_leader") == 0
