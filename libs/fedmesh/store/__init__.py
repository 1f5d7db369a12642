"""Redis: client, key schema, Lua-guarded round state, embedded server launcher."""

from fedmesh.store.client import REDIS_URL_ENV, connect, redis_url_from_env
from fedmesh.store.embedded import EmbeddedRedis, free_port, redis_server_binary
from fedmesh.store.rounds import (
    TERMINAL,
    Phase,
    Receipt,
    ReceiptOutcome,
    RoundRecord,
    RoundStore,
)

__all__ = [
    "REDIS_URL_ENV",
    "TERMINAL",
    "EmbeddedRedis",
    "Phase",
    "Receipt",
    "ReceiptOutcome",
    "RoundRecord",
    "RoundStore",
    "connect",
    "free_port",
    "redis_server_binary",
    "redis_url_from_env",
]
