"""The nonces each node has used in a run, so that a replayed one is refused (DESIGN §5).

One Redis hash per run and node, under the run's hash tag: nonce (hex) →
``round:digest`` of the update it was drawn for. Binding a nonce to its update
rather than only marking it used keeps retries idempotent: the same signed
update sent again (same round, digest and nonce) passes, any other update
with that nonce is a replay.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from fedmesh.store import keys

# KEYS[1] the node's nonce hash. ARGV: nonce hex, binding. Returns the binding kept.
_CLAIM = """
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held then return held end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return ARGV[2]
"""


def nonces_key(run_id: str, node_id: str) -> str:
    """Hash: nonce (hex) → ``round:digest`` of the update it signed, for one node of a run."""
    return f"{keys.run_tag(run_id)}:nonces:{node_id}"


def binding(round_no: int, digest: str) -> str:
    """What a nonce is bound to: the round and digest of its update."""
    return f"{round_no}:{digest}"


class UsedNonces:
    """Nonces bound to the updates they were drawn for, per run and node, in Redis."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._claim = redis.register_script(_CLAIM)

    async def bound_to(self, run_id: str, node_id: str, nonce: bytes) -> str | None:
        """The ``round:digest`` the nonce was used for, or None when it is unused."""
        held = await self._redis.hget(nonces_key(run_id, node_id), nonce.hex())
        return None if held is None else str(held)

    async def claim(self, run_id: str, node_id: str, nonce: bytes, bound: str) -> str:
        """Bind an unused nonce to ``bound``; return what it is bound to now (atomic)."""
        held = await self._claim(keys=[nonces_key(run_id, node_id)], args=[nonce.hex(), bound])
        return str(held)
