"""Reports nodes going stale (and coming back) to alerting, once per change."""

from __future__ import annotations

import redis.asyncio as aioredis

from fedmesh.services.coordinator.nodes import NodeRegistry, NodeState
from fedmesh.services.coordinator.ports import Events
from fedmesh.store import keys


class LivenessWatch:
    """Compares each node's state with what was last reported, and emits the difference."""

    def __init__(
        self, redis: aioredis.Redis, nodes: NodeRegistry, events: Events, stale_after_ms: int
    ) -> None:
        self._redis = redis
        self._nodes = nodes
        self._events = events
        self._stale_after_ms = stale_after_ms

    async def check(self, now_unix_ms: int) -> None:
        """Emit node_stale for newly stale nodes, and its resolve for nodes beating again."""
        reported = await self._redis.smembers(keys.stale_reported_key())
        for node in await self._nodes.all():
            state = node.state(now_unix_ms, self._stale_after_ms)
            labels = {"node": node.node_id, "region": node.region}
            if state is NodeState.STALE and node.node_id not in reported:
                if await self._redis.sadd(keys.stale_reported_key(), node.node_id):
                    silent_s = (now_unix_ms - node.last_heartbeat_unix_ms) / 1000
                    await self._events.emit(
                        "node_stale", labels, {"silent_for_s": f"{silent_s:.0f}"}
                    )
            elif (
                state is NodeState.ONLINE
                and node.node_id in reported
                and await self._redis.srem(keys.stale_reported_key(), node.node_id)
            ):
                await self._events.emit("node_stale", labels, resolve=True)
