"""Fencing tokens: the coordinator leader's token, checked by whoever it asks to write."""

from __future__ import annotations

import redis.asyncio as aioredis

from fedmesh.errors import FailedPrecondition
from fedmesh.store import keys


async def current_token(redis: aioredis.Redis) -> int:
    """The fencing token of the current leader (0 before any leader)."""
    raw = await redis.get(keys.fencing_key())
    return int(raw) if raw else 0


async def next_token(redis: aioredis.Redis) -> int:
    """Issue a new token (on every leadership change); older ones become stale."""
    return int(await redis.incr(keys.fencing_key()))


async def require_current(redis: aioredis.Redis, token: int, action: str) -> None:
    """Refuse ``action`` unless ``token`` is the current leader's (a deposed leader's is stale)."""
    current = await current_token(redis)
    if token != current:
        raise FailedPrecondition(
            f"{action} refused: fencing token {token} is stale; the current leader holds {current}"
        )
