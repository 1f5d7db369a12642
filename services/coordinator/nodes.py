"""Registered nodes: liveness from heartbeats, trust that changes only on evidence, bans."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from fedmesh.client.signing import check_public_key
from fedmesh.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from fedmesh.store import keys

# DESIGN §8: trust starts at 1.0, eligible at ≥ 0.5, ×0.8 per evidence, banned after 3.
INITIAL_TRUST = 1.0
ELIGIBLE_TRUST = 0.5
TRUST_DECAY = 0.8
BAN_AFTER_EVIDENCE = 3


class NodeState(StrEnum):
    """Liveness and standing of a node."""

    ONLINE = "ONLINE"
    STALE = "STALE"
    BANNED = "BANNED"


@dataclass(frozen=True)
class Node:
    """A node as the coordinator knows it."""

    node_id: str
    samples: int
    region: str
    capabilities: Mapping[str, str]
    trust: float
    evidence_count: int
    banned: bool
    last_heartbeat_unix_ms: int
    signing_public_key: bytes = b""

    def state(self, now_unix_ms: int, stale_after_ms: int) -> NodeState:
        """BANNED, STALE (no beat within ``stale_after_ms``) or ONLINE."""
        if self.banned:
            return NodeState.BANNED
        if now_unix_ms - self.last_heartbeat_unix_ms > stale_after_ms:
            return NodeState.STALE
        return NodeState.ONLINE

    def eligible(self, now_unix_ms: int, stale_after_ms: int) -> bool:
        """Online, trusted enough, and with a signing key (its updates can be verified)."""
        return (
            self.state(now_unix_ms, stale_after_ms) is NodeState.ONLINE
            and self.trust >= ELIGIBLE_TRUST
            and bool(self.signing_public_key)
        )


# KEYS[1] node hash. ARGV: trust factor, ban threshold, occurrence (run/round).
# Returns {trust, count, banned, counted}. The same occurrence counts once, so a
# leader that takes over a half-closed round cannot punish a node twice for it.
_EVIDENCE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOTFOUND') end
local counted = redis.call('HSETNX', KEYS[1], 'evidence:' .. ARGV[3], '1')
if counted == 1 then
  redis.call('HINCRBY', KEYS[1], 'evidence_count', 1)
  local decayed = tonumber(redis.call('HGET', KEYS[1], 'trust')) * tonumber(ARGV[1])
  redis.call('HSET', KEYS[1], 'trust', tostring(decayed))
end
local count = tonumber(redis.call('HGET', KEYS[1], 'evidence_count'))
if count >= tonumber(ARGV[2]) then redis.call('HSET', KEYS[1], 'banned', '1') end
local banned = 0
if redis.call('HGET', KEYS[1], 'banned') == '1' then banned = 1 end
return {redis.call('HGET', KEYS[1], 'trust'), count, banned, counted}
"""


# KEYS[1] node hash. ARGV: signing key (hex), initial trust, samples, region, capabilities,
# heartbeat. Trust on first use: a node id keeps the first signing key it registered with,
# and a registration with another key changes nothing.
_REGISTER = """
local known = redis.call('HGET', KEYS[1], 'signing_public_key')
if known and known ~= '' and known ~= ARGV[1] then
  return redis.error_reply('KEYMISMATCH ' .. known)
end
redis.call('HSETNX', KEYS[1], 'trust', ARGV[2])
redis.call('HSETNX', KEYS[1], 'evidence_count', '0')
redis.call('HSETNX', KEYS[1], 'banned', '0')
redis.call('HSET', KEYS[1], 'signing_public_key', ARGV[1], 'samples', ARGV[3], 'region', ARGV[4],
           'capabilities', ARGV[5], 'last_heartbeat_unix_ms', ARGV[6])
return 'OK'
"""


@dataclass(frozen=True)
class EvidenceOutcome:
    """A node's standing after one more piece of evidence."""

    trust: float
    evidence_count: int
    banned: bool
    counted: bool


class NodeRegistry:
    """Nodes in Redis, one hash each."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._evidence = redis.register_script(_EVIDENCE)
        self._register = redis.register_script(_REGISTER)

    async def register(
        self,
        node_id: str,
        samples: int,
        region: str,
        capabilities: Mapping[str, str],
        now_unix_ms: int,
        signing_public_key: bytes,
    ) -> Node:
        """Add a node or refresh its registration; trust, evidence and signing key are kept.

        The first signing key a node id registers with is its key from then on
        (trust on first use): FailedPrecondition for another one, and nothing
        changes. An operator re-keys a node by deleting its record from Redis
        (``DEL fm:node:<id>``); there is no RPC to forget a node.
        """
        if not node_id or len(node_id) > 256 or any(c.isspace() for c in node_id):
            raise InvalidArgument(
                f"node id {node_id!r} is invalid; expected 1–256 characters without spaces"
            )
        if samples < 0:
            raise InvalidArgument(f"samples is {samples}; expected 0 or more")
        problem = check_public_key(signing_public_key)
        if problem is not None:
            raise InvalidArgument(f"signing_public_key of node {node_id!r} is refused: {problem}")
        key = keys.node_key(node_id)
        offered = signing_public_key.hex()
        try:
            await self._register(
                keys=[key],
                args=[
                    offered,
                    str(INITIAL_TRUST),
                    str(samples),
                    region,
                    json.dumps(dict(capabilities), sort_keys=True),
                    str(now_unix_ms),
                ],
            )
        except ResponseError as exc:
            code, _, known = str(exc).strip().partition(" ")
            if code != "KEYMISMATCH":
                raise
            raise FailedPrecondition(
                f"node {node_id!r} registered before with signing key {known[:16]}…, not "
                f"{offered[:16]}…; a node keeps its first key. If the node was re-keyed on "
                f"purpose, an operator must delete its record (redis: DEL {key}) first"
            ) from None
        await self._redis.sadd(keys.nodes_index_key(), node_id)
        node = await self.get(node_id)
        if node.banned:
            raise PermissionDenied(
                f"node {node_id!r} is banned after {node.evidence_count} pieces of evidence"
            )
        return node

    async def heartbeat(self, node_id: str, now_unix_ms: int) -> Node:
        """Record a beat from a registered node; NotFound for an unknown one."""
        if not await self._redis.sismember(keys.nodes_index_key(), node_id):
            raise NotFound(f"node {node_id!r} is not registered; call RegisterNode first")
        await self._redis.hset(keys.node_key(node_id), "last_heartbeat_unix_ms", str(now_unix_ms))
        return await self.get(node_id)

    async def get(self, node_id: str) -> Node:
        """One node; NotFound when it never registered."""
        raw = _text_map(await self._redis.hgetall(keys.node_key(node_id)))
        if not raw:
            raise NotFound(f"node {node_id!r} is not registered")
        return _node(node_id, raw)

    async def all(self) -> list[Node]:
        """Every registered node, by id."""
        ids = sorted(str(i) for i in await self._redis.smembers(keys.nodes_index_key()))
        pipe = self._redis.pipeline(transaction=False)
        for node_id in ids:
            pipe.hgetall(keys.node_key(node_id))
        rows = await pipe.execute()
        return [
            _node(node_id, _text_map(raw)) for node_id, raw in zip(ids, rows, strict=True) if raw
        ]

    async def add_evidence(self, node_id: str, occurrence: str) -> EvidenceOutcome:
        """One excluded or rejected update: trust ×0.8, banned at the third.

        ``occurrence`` names the round (``run/round``); evidence from the same
        occurrence again changes nothing and comes back with ``counted`` False.
        """
        try:
            trust, count, banned, counted = await self._evidence(
                keys=[keys.node_key(node_id)], args=[TRUST_DECAY, BAN_AFTER_EVIDENCE, occurrence]
            )
        except ResponseError as exc:
            if str(exc).strip() == "NOTFOUND":
                raise NotFound(f"node {node_id!r} is not registered") from None
            raise
        return EvidenceOutcome(float(trust), int(count), bool(banned), bool(counted))


def _text_map(raw: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    return {str(k): str(v) for k, v in raw.items()}


def _node(node_id: str, raw: Mapping[str, str]) -> Node:
    return Node(
        node_id=node_id,
        samples=int(raw.get("samples", "0")),
        region=raw.get("region", ""),
        capabilities=json.loads(raw.get("capabilities", "{}")),
        trust=float(raw.get("trust", INITIAL_TRUST)),
        evidence_count=int(raw.get("evidence_count", "0")),
        banned=raw.get("banned") == "1",
        last_heartbeat_unix_ms=int(raw.get("last_heartbeat_unix_ms", "0")),
        signing_public_key=bytes.fromhex(raw.get("signing_public_key", "")),
    )
