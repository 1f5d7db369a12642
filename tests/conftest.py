"""Shared fixtures: a real Redis (embedded, or FEDMESH_REDIS_URL) for the whole session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from fedmesh.store import EmbeddedRedis, connect, redis_url_from_env


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis: the external one when configured, else an embedded server."""
    external = redis_url_from_env()
    if external:
        yield external
        return
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client on an emptied database."""
    client = connect(redis_url)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()
