"""The replica's main loop: hold or wait for the lease; while leading, drive the runs."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from fedmesh.services.coordinator.driver import RoundDriver, now_ms
from fedmesh.services.coordinator.lease import LeaderLease, Leadership
from fedmesh.services.coordinator.liveness import LivenessWatch

log = logging.getLogger(__name__)


@dataclass
class ReplicaState:
    """What this replica currently knows about leadership (read by GetStatus)."""

    leadership: Leadership


class Replica:
    """One coordinator replica: leader or standby."""

    def __init__(
        self, lease: LeaderLease, driver: RoundDriver, liveness: LivenessWatch, tick_s: float
    ) -> None:
        self._lease = lease
        self._driver = driver
        self._liveness = liveness
        self._tick_s = tick_s
        self.state = ReplicaState(Leadership(False, 0, ""))

    @property
    def replica_id(self) -> str:
        """This replica's id."""
        return self._lease.replica_id

    async def run(self) -> None:
        """Loop until cancelled; a leader ticks the driver, a standby keeps asking."""
        try:
            while True:
                await self._once()
                await asyncio.sleep(self._tick_s)
        finally:
            await self._driver.cancel()
            if self.state.leadership.leader:
                await self._lease.release()

    async def _once(self) -> None:
        try:
            leadership = await self._lease.attempt()
        except Exception as exc:  # Redis down: stop acting as leader until it is back
            log.warning("lease attempt failed", extra={"fields": {"error": str(exc)}})
            leadership = Leadership(False, 0, "")
        was_leader = self.state.leadership.leader
        self.state.leadership = leadership
        if was_leader and not leadership.leader:
            log.warning("lost leadership", extra={"fields": {"holder": leadership.holder}})
            await self._driver.cancel()
        if not leadership.leader:
            return
        if not was_leader:
            log.info("became leader", extra={"fields": {"token": leadership.fencing_token}})
        try:
            await self._driver.tick(leadership.fencing_token)
            await self._liveness.check(now_ms())
        except Exception:
            log.exception("control loop tick failed")
