"""A real registry and real coordinator replicas, in this process on port 0, over the real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import torch

from fedmesh.client.alerting import EventEmitter
from fedmesh.client.coordinator import CoordinatorClient
from fedmesh.client.registry import RegistryClient
from fedmesh.config import CommonSettings
from fedmesh.proto.coordinator.v1 import coordinator_pb2_grpc as pb_grpc
from fedmesh.rpc import open_channel, start_server
from fedmesh.services.coordinator.server import Coordinator, build
from fedmesh.services.coordinator.settings import CoordinatorSettings
from fedmesh.services.registry.server import build as build_registry
from fedmesh.services.registry.settings import RegistrySettings
from fedmesh.stopping import stop

MODEL = "detector"


@dataclass
class Replica:
    """A running coordinator replica: its clients and its wiring."""

    address: str
    client: CoordinatorClient
    stub: pb_grpc.CoordinatorServiceAsyncStub
    coordinator: Coordinator
    loops: asyncio.Task[None] | None

    async def stop_loops(self) -> None:
        """Stop the replica loop and the task feed, as a graceful shutdown does."""
        if self.loops is not None:
            self.coordinator.close()
            await stop(self.loops)
            self.loops = None


StartReplica = Callable[..., contextlib.AbstractAsyncContextManager[Replica]]


@pytest.fixture
def registry_settings(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> RegistrySettings:
    monkeypatch.setenv("FEDMESH_REGISTRY_DATA_DIR", str(tmp_path / "registry"))
    monkeypatch.setenv("FEDMESH_REDIS_URL", redis_url)
    monkeypatch.delenv("FEDMESH_ALERTING_ADDRESS", raising=False)
    return RegistrySettings.from_env()


@pytest.fixture
async def registry_address(
    registry_settings: RegistrySettings, redis_client: aioredis.Redis
) -> AsyncIterator[str]:
    running = await start_server(await build_registry(registry_settings, redis_client))
    yield f"127.0.0.1:{running.port}"
    await running.stop(0)


@pytest.fixture
async def registry(registry_address: str) -> AsyncIterator[RegistryClient]:
    async with open_channel(registry_address) as channel:
        yield RegistryClient(channel)


@pytest.fixture
async def published(registry: RegistryClient) -> int:
    """Version 1 of the test model in the registry."""
    generator = torch.Generator().manual_seed(3)
    version = await registry.publish_tensors(MODEL, {"w": torch.randn(4, 4, generator=generator)})
    return int(version.ref.version)


@pytest.fixture
def coordinator_settings(redis_url: str, registry_address: str) -> CoordinatorSettings:
    """Fast loops, a 1 s lease; the aggregator and alerting addresses lead nowhere."""
    return CoordinatorSettings(
        common=CommonSettings(
            listen="127.0.0.1:0",
            redis_url=redis_url,
            coordinator_address="127.0.0.1:1",
            aggregator_address="127.0.0.1:1",
            registry_address=registry_address,
            alerting_address="127.0.0.1:1",
            tls=None,
            metrics_port=0,
        ),
        heartbeat_interval_s=1.0,
        stale_after_s=30.0,
        lease_ttl_ms=1000,
        tick_s=0.05,
        task_poll_s=0.05,
        replica_id="replica-a",
    )


@pytest.fixture
def start_replica(
    coordinator_settings: CoordinatorSettings, redis_client: aioredis.Redis
) -> StartReplica:
    """Start a coordinator replica.

    ``loops=False`` serves the API without the control loop; ``redis`` replaces the
    test Redis; other keywords change the settings (``replica_id="b"``).
    """

    @contextlib.asynccontextmanager
    async def start(
        loops: bool = True, redis: aioredis.Redis | None = None, **changes: Any
    ) -> AsyncIterator[Replica]:
        settings = dataclasses.replace(coordinator_settings, **changes)
        store = redis if redis is not None else redis_client
        async with (
            open_channel(settings.common.aggregator_address) as aggregator,
            open_channel(settings.common.registry_address) as registry,
        ):
            coordinator = build(
                settings,
                store,
                aggregator,
                registry,
                EventEmitter(None, source="coordinator"),
            )
            running = await start_server([coordinator.binding])
            task = asyncio.create_task(coordinator.run()) if loops else None
            address = f"127.0.0.1:{running.port}"
            try:
                async with open_channel(address) as channel:
                    replica = Replica(
                        address,
                        CoordinatorClient(channel, timeout_s=5),
                        pb_grpc.CoordinatorServiceStub(channel),
                        coordinator,
                        task,
                    )
                    yield replica
                    await replica.stop_loops()
            finally:
                if task is not None:
                    coordinator.close()
                    await stop(task)
                await running.stop(0)

    return start


async def snapshot(redis: aioredis.Redis) -> dict[str, object]:
    """Every key with its value, whatever its type: to show that a refusal changed nothing."""
    state: dict[str, object] = {}
    for key in sorted(str(k) for k in await redis.keys("*")):
        kind = await redis.type(key)
        if kind == "string":
            state[key] = await redis.get(key)
        elif kind == "hash":
            state[key] = await redis.hgetall(key)
        elif kind == "set":
            state[key] = sorted(await redis.smembers(key))
        elif kind == "zset":
            state[key] = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            state[key] = await redis.lrange(key, 0, -1)
        else:
            state[key] = kind
    return state
