"""Coordinator settings from FEDMESH_* environment variables."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from fedmesh.config import CommonSettings, env_float, env_int, env_str


@dataclass(frozen=True)
class CoordinatorSettings:
    """Heartbeats (DESIGN §8: every 10 s, stale after 30 s), the lease, the loops' periods."""

    common: CommonSettings
    heartbeat_interval_s: float
    stale_after_s: float
    lease_ttl_ms: int
    tick_s: float
    task_poll_s: float
    replica_id: str

    @classmethod
    def from_env(cls) -> CoordinatorSettings:
        """Read ``FEDMESH_COORDINATOR_*``."""
        return cls(
            common=CommonSettings.from_env(),
            heartbeat_interval_s=env_float("FEDMESH_COORDINATOR_HEARTBEAT_S", 10.0),
            stale_after_s=env_float("FEDMESH_COORDINATOR_STALE_AFTER_S", 30.0),
            lease_ttl_ms=env_int("FEDMESH_COORDINATOR_LEASE_TTL_MS", 5000),
            tick_s=env_float("FEDMESH_COORDINATOR_TICK_S", 0.2),
            task_poll_s=env_float("FEDMESH_COORDINATOR_TASK_POLL_S", 0.2),
            replica_id=env_str("FEDMESH_COORDINATOR_REPLICA_ID", f"coord-{uuid.uuid4().hex[:8]}"),
        )
