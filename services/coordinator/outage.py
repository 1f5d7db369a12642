"""Redis out of reach becomes UNAVAILABLE, so nodes and operators retry instead of giving up.

Without this, a servicer method that meets a Redis outage would report INTERNAL
(an unexpected error), which clients must not retry.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from fedmesh.errors import Unavailable

F = TypeVar("F", bound=Callable[..., Any])

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)


def _unavailable(exc: Exception) -> Unavailable:
    return Unavailable(f"the coordinator's Redis is unreachable ({exc}); retry shortly")


def unavailable_while_redis_down(method: F) -> F:
    """Wrap a servicer method (unary or streaming) so Redis outages raise Unavailable."""
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream(self: Any, request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async for item in method(self, request, context):
                    yield item
            except REDIS_DOWN as exc:
                raise _unavailable(exc) from exc

        return cast(F, stream)

    @functools.wraps(method)
    async def unary(self: Any, request: Any, context: Any) -> Any:
        try:
            return await cast(Callable[..., Awaitable[Any]], method)(self, request, context)
        except REDIS_DOWN as exc:
            raise _unavailable(exc) from exc

    return cast(F, unary)
