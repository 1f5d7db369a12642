from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

from fedmesh.errors import NotFound, Unavailable
from fedmesh.services.coordinator.outage import unavailable_while_redis_down


class Edge:
    def __init__(self, error: Exception) -> None:
        self.error = error

    @unavailable_while_redis_down
    async def Unary(self, request: Any, context: Any) -> str:
        raise self.error

    @unavailable_while_redis_down
    async def Stream(self, request: Any, context: Any) -> AsyncIterator[str]:
        yield "first"
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        TimeoutError("Timeout reading from socket"),
        BusyLoadingError("Redis is loading the dataset in memory"),
    ],
)
async def test_redis_out_of_reach_becomes_unavailable(error: Exception) -> None:
    edge = Edge(error)

    with pytest.raises(Unavailable) as unary:
        await edge.Unary(None, None)
    items: list[str] = []

    async def drain() -> None:
        async for item in edge.Stream(None, None):
            items.append(item)

    with pytest.raises(Unavailable) as stream:
        await drain()

    expected = f"the coordinator's Redis is unreachable ({error}); retry shortly"
    assert str(unary.value) == str(stream.value) == expected
    assert items == ["first"]


async def test_other_errors_pass_through() -> None:
    edge = Edge(NotFound("run 'x' does not exist"))

    with pytest.raises(NotFound, match="run 'x' does not exist"):
        await edge.Unary(None, None)
