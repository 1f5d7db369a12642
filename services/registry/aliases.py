"""Aliases (``candidate``, ``production``…): compare-and-set moves, each one recorded."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from fedmesh.errors import Aborted, FailedPrecondition, NotFound
from fedmesh.services.registry import keys


class AliasAction(StrEnum):
    """How an alias moved."""

    PROMOTE = "promote"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class AliasMove:
    """One recorded alias move; ``from_version`` 0 means the alias was unset."""

    alias: str
    from_version: int
    to_version: int
    action: AliasAction
    moved_unix_ms: int
    reason: str

    def to_json(self) -> str:
        """The stored JSON form."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> AliasMove:
        """Parse the stored JSON form."""
        body = json.loads(raw)
        body["action"] = AliasAction(body["action"])
        return cls(**body)


# KEYS: aliases, moves, dropped, records. ARGV: alias, expected current ("0": unset), target, move.
_MOVE = """
local current = redis.call('HGET', KEYS[1], ARGV[1]) or '0'
if current ~= ARGV[2] then return redis.error_reply('MOVED ' .. current) end
if redis.call('HEXISTS', KEYS[4], ARGV[3]) == 0 then return redis.error_reply('NOVERSION') end
if redis.call('SISMEMBER', KEYS[3], ARGV[3]) == 1 then return redis.error_reply('DROPPED') end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('LPUSH', KEYS[2], ARGV[4])
return 'OK'
"""


class AliasBook:
    """Alias pointers and their history, per model."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._move = redis.register_script(_MOVE)

    async def move(self, name: str, move: AliasMove) -> None:
        """Point ``move.alias`` at ``move.to_version`` if it still points at ``from_version``.

        Aborted when another move won the race; FailedPrecondition when the target's
        blob was dropped by retention; NotFound when the target does not exist.
        """
        try:
            await self._move(
                keys=[
                    keys.aliases_key(name),
                    keys.alias_moves_key(name),
                    keys.dropped_key(name),
                    keys.records_key(name),
                ],
                args=[move.alias, move.from_version, move.to_version, move.to_json()],
            )
        except ResponseError as exc:
            text = str(exc).strip()
            if text.startswith("MOVED "):
                raise Aborted(
                    f"alias {move.alias!r} of model {name!r} moved to version {text[6:]} while "
                    f"this move from {move.from_version} was decided; retry"
                ) from None
            if text == "NOVERSION":
                raise NotFound(f"model {name!r} has no version {move.to_version}") from None
            if text == "DROPPED":
                raise FailedPrecondition(
                    f"version {move.to_version} of model {name!r} cannot take alias "
                    f"{move.alias!r}: retention deleted its blob"
                ) from None
            raise

    async def moves(self, name: str, alias: str = "") -> list[AliasMove]:
        """Recorded moves of ``name`` (of one alias when given), newest first."""
        history = [
            AliasMove.from_json(str(raw))
            for raw in await self._redis.lrange(keys.alias_moves_key(name), 0, -1)
        ]
        return [m for m in history if not alias or m.alias == alias]
