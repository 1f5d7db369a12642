"""Readiness probes for the health service: Redis answers, peers say SERVING."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

Probe = Callable[[], Awaitable[bool]]


def redis_probe(redis: aioredis.Redis) -> Probe:
    """Ready while Redis answers PING."""

    async def probe() -> bool:
        try:
            return bool(await redis.ping())
        except Exception:  # any failure to reach Redis means "not ready"
            return False

    return probe


def peer_probe(channel: grpc.aio.Channel, timeout_s: float = 1.0) -> Probe:
    """Ready while the peer's standard health check says SERVING."""
    stub = health_pb2_grpc.HealthStub(channel)

    async def probe() -> bool:
        try:
            response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    return probe


def all_of(probes: Sequence[Probe]) -> Probe:
    """Ready while every probe is."""

    async def probe() -> bool:
        for each in probes:
            if not await each():
                return False
        return True

    return probe
