"""Leader election among coordinator replicas: a Redis lease plus a fencing token."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from fedmesh.store import fencing, keys

# KEYS[1] lease. ARGV: replica id, ttl ms. Returns 'renewed', 'acquired' or 'held'.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]); return 'renewed' end
if not holder then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]); return 'acquired' end
return 'held'
"""

# KEYS[1] lease. ARGV: replica id. Deletes the lease only if this replica holds it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Leadership:
    """This replica's standing after a lease attempt."""

    leader: bool
    fencing_token: int
    holder: str


class LeaderLease:
    """Acquire or renew the lease; every new leader gets a new fencing token."""

    def __init__(self, redis: aioredis.Redis, replica_id: str, ttl_ms: int) -> None:
        self._redis = redis
        self.replica_id = replica_id
        self.ttl_ms = ttl_ms
        self._lease = redis.register_script(_LEASE)
        self._release = redis.register_script(_RELEASE)
        self._token = 0

    async def attempt(self) -> Leadership:
        """Renew if held, take it if free; a fresh acquisition issues a new token.

        A renewal whose token is not the current one also issues a new token: a
        replica restarted under the same id finds the lease of its previous life
        (and knows no token), and a Redis restored from an older append-only file
        may have lost the last increment.
        """
        outcome = await self._lease(keys=[keys.leader_key()], args=[self.replica_id, self.ttl_ms])
        if outcome == "held":
            self._token = 0
            holder = await self._redis.get(keys.leader_key())
            return Leadership(False, 0, str(holder or ""))
        if outcome == "acquired" or await fencing.current_token(self._redis) != self._token:
            self._token = await fencing.next_token(self._redis)
        return Leadership(True, self._token, self.replica_id)

    async def current_token(self) -> int:
        """The token of whoever leads now (0 before any leader)."""
        return await fencing.current_token(self._redis)

    async def release(self) -> None:
        """Give the lease up (on graceful stop) so a standby takes over at once."""
        await self._release(keys=[keys.leader_key()], args=[self.replica_id])
        self._token = 0
