"""The asyncio Redis client every service uses."""

from __future__ import annotations

import os

import redis.asyncio as aioredis

REDIS_URL_ENV = "FEDMESH_REDIS_URL"


def redis_url_from_env() -> str | None:
    """The external Redis named by ``FEDMESH_REDIS_URL``, if any."""
    return os.environ.get(REDIS_URL_ENV) or None


def connect(url: str) -> aioredis.Redis:
    """An asyncio client with string replies and bounded timeouts."""
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=15,
        retry_on_timeout=True,
    )
