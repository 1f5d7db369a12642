import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from fedmesh.services.coordinator.runs import ModelRef
from fedmesh.services.coordinator.spec import (
    PrivacySettings,
    SecureAggregationSettings,
    TrainingSettings,
)
from fedmesh.services.coordinator.task_feed import TaskFeed
from fedmesh.services.coordinator.tasks import Task, TaskBoard, TaskKind
from fedmesh.stopping import stop


def task(node: str, round_no: int) -> Task:
    return Task(
        task_id=f"run-1/{round_no}/train/{node}",
        kind=TaskKind.TRAIN,
        run_id="run-1",
        round_no=round_no,
        model=ModelRef("m", round_no, "d"),
        aggregator_address="127.0.0.1:1",
        deadline_unix_ms=10**13,
        training=TrainingSettings(),
        privacy=PrivacySettings(),
        secure_aggregation=SecureAggregationSettings(),
    )


class Follower:
    """Reads a stream in the background; what arrived is in ``received``."""

    def __init__(self, stream: AsyncIterator[Task]) -> None:
        self.received: list[Task] = []
        self._task = asyncio.create_task(self._follow(stream))

    async def _follow(self, stream: AsyncIterator[Task]) -> None:
        async for item in stream:
            self.received.append(item)

    async def settle(self, seconds: float = 0.2) -> list[Task]:
        await asyncio.sleep(seconds)
        return list(self.received)

    async def ended(self) -> None:
        await self._task

    async def stop(self) -> None:
        await stop(self._task)


@pytest.fixture
def board(redis_client: aioredis.Redis) -> TaskBoard:
    return TaskBoard(redis_client)


async def test_a_stream_gets_the_pending_task_at_once_and_each_new_one(board: TaskBoard) -> None:
    feed = TaskFeed(board, interval_s=0.02)
    await board.assign(["n1"], {"n1": task("n1", 1)})
    poller = asyncio.create_task(feed.run())
    follower = Follower(feed.watch("n1"))

    at_once = await follower.settle()
    await board.assign(["n1"], {"n1": task("n1", 2)})
    later = await follower.settle()

    await follower.stop()
    await stop(poller)
    assert at_once == [task("n1", 1)]
    assert later == [task("n1", 1), task("n1", 2)]
    assert feed.streams == 0


async def test_one_read_serves_every_stream(
    board: TaskBoard, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = TaskFeed(board, interval_s=10)
    nodes = [f"n{i}" for i in range(50)]
    followers = [Follower(feed.watch(node)) for node in nodes]
    await asyncio.sleep(0.1)
    await board.assign(nodes, {node: task(node, 1) for node in nodes})
    reads: list[int] = []
    original = board.pending_many

    async def counted(node_ids: list[str]) -> dict[str, Task | None]:
        reads.append(len(node_ids))
        return await original(node_ids)

    monkeypatch.setattr(board, "pending_many", counted)

    await feed.poll()
    received = [await follower.settle(0.01) for follower in followers]

    assert reads == [50]
    assert received == [[task(node, 1)] for node in nodes]
    assert feed.streams == 50
    for follower in followers:
        await follower.stop()
    assert feed.streams == 0


async def test_closing_the_feed_ends_every_stream(board: TaskBoard) -> None:
    feed = TaskFeed(board, interval_s=0.02)
    follower = Follower(feed.watch("n1"))
    await asyncio.sleep(0.05)

    feed.close()

    await asyncio.wait_for(follower.ended(), 1)
    assert [task async for task in feed.watch("n2")] == []
    assert feed.streams == 0
