"""Readiness: SERVING only while Redis answers and the blob directory is writable."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedmesh.rpc import open_channel, start_server
from fedmesh.services.registry.blobs import BlobStore
from fedmesh.services.registry.server import build, readiness
from fedmesh.services.registry.servicer import SERVICE_NAME
from fedmesh.services.registry.settings import RegistrySettings
from fedmesh.store import EmbeddedRedis, connect

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def wait_for_status(health: health_pb2_grpc.HealthStub, wanted: int) -> int:
    """Poll the registry's health until it reports ``wanted`` (or give up after many polls)."""
    status = -1
    for _ in range(200):
        status = (await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))).status
        if status == wanted:
            break
        await asyncio.sleep(0.05)
    return status


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


@contextlib.asynccontextmanager
async def serving(settings: RegistrySettings, redis_server: EmbeddedRedis) -> AsyncIterator[str]:
    redis = connect(redis_server.url)
    running = await start_server(
        await build(settings, redis),
        readiness=readiness(redis, BlobStore(settings.blob_dir)),
        probe_interval=0.05,
    )
    try:
        yield f"127.0.0.1:{running.port}"
    finally:
        await running.stop(0)
        await redis.aclose()


async def test_not_serving_while_the_blob_dir_cannot_take_files(
    registry_settings: RegistrySettings, own_redis: EmbeddedRedis
) -> None:
    staging = registry_settings.blob_dir / ".staging"
    async with serving(registry_settings, own_redis) as address, open_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        ready = await wait_for_status(health, SERVING)
        shutil.rmtree(staging)
        staging.write_text("not a directory")
        broken = await wait_for_status(health, NOT_SERVING)
        staging.unlink()
        staging.mkdir()
        repaired = await wait_for_status(health, SERVING)

    assert (ready, broken, repaired) == (SERVING, NOT_SERVING, SERVING)


async def test_not_serving_while_redis_is_down(
    registry_settings: RegistrySettings, own_redis: EmbeddedRedis
) -> None:
    async with serving(registry_settings, own_redis) as address, open_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        ready = await wait_for_status(health, SERVING)
        own_redis.kill()
        down = await wait_for_status(health, NOT_SERVING)

    assert (ready, down) == (SERVING, NOT_SERVING)
