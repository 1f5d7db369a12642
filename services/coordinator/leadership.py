"""The replica's main loop: hold or wait for the lease; while leading, drive the runs.

The lease is renewed by its own loop, apart from the control loop, so a slow tick
(a slow peer, many runs) never lets the lease lapse under a live leader. A lease
attempt that does not finish within half the lease time counts as lost: the
replica stops driving before a standby can take over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from fedmesh.services.coordinator.driver import RoundDriver, now_ms
from fedmesh.services.coordinator.lease import LeaderLease, Leadership
from fedmesh.services.coordinator.liveness import LivenessWatch
from fedmesh.services.coordinator.metrics import CoordinatorMetrics
from fedmesh.stopping import pause, stop

log = logging.getLogger(__name__)

NOT_LEADING = Leadership(False, 0, "")
# Reading every node costs one Redis pass over all of them; a second is finer than staleness needs.
LIVENESS_EVERY_S = 1.0


@dataclass
class ReplicaState:
    """What this replica currently knows about leadership (read by GetStatus)."""

    leadership: Leadership


class Replica:
    """One coordinator replica: leader or standby."""

    def __init__(
        self,
        lease: LeaderLease,
        driver: RoundDriver,
        liveness: LivenessWatch,
        tick_s: float,
        metrics: CoordinatorMetrics,
    ) -> None:
        self._lease = lease
        self._driver = driver
        self._liveness = liveness
        self._tick_s = tick_s
        self._metrics = metrics
        self._attempt_timeout_s = lease.ttl_ms / 2000
        self._drive: asyncio.Task[None] | None = None
        self._halt = asyncio.Event()
        self._closing = asyncio.Event()
        self.state = ReplicaState(NOT_LEADING)

    @property
    def replica_id(self) -> str:
        """This replica's id."""
        return self._lease.replica_id

    async def current_fencing_token(self) -> int:
        """The leader's token: this replica's own, or, on a standby, the one in Redis."""
        return self.state.leadership.fencing_token or await self._lease.current_token()

    def close(self) -> None:
        """Ask the loop to end; it stops driving and releases the lease on its way out."""
        self._closing.set()

    async def run(self) -> None:
        """Loop until closed or cancelled: renew or seek the lease, start or stop driving."""
        try:
            while not self._closing.is_set():
                await self._once()
                await pause(self._closing, self._tick_s)
        finally:
            await self._stop_driving()
            if self.state.leadership.leader:
                with contextlib.suppress(Exception):
                    await self._lease.release()

    async def _once(self) -> None:
        try:
            async with asyncio.timeout(self._attempt_timeout_s):
                leadership = await self._lease.attempt()
        except Exception as exc:  # Redis down or slow: stop acting as leader until it answers
            log.warning("lease attempt failed", extra={"fields": {"error": repr(exc)}})
            leadership = NOT_LEADING
        previous = self.state.leadership
        self.state.leadership = leadership
        if previous.leader and leadership.fencing_token != previous.fencing_token:
            log.warning(
                "lost leadership",
                extra={"fields": {"holder": leadership.holder, "token": previous.fencing_token}},
            )
            self._metrics.standing_by()
            await self._stop_driving()
        if leadership.leader and self._drive is None:
            log.info("became leader", extra={"fields": {"token": leadership.fencing_token}})
            self._metrics.leading(leadership.fencing_token)
            self._halt = asyncio.Event()
            self._drive = asyncio.create_task(
                self._control_loop(leadership.fencing_token, self._halt), name="control-loop"
            )

    async def _control_loop(self, fencing_token: int, halt: asyncio.Event) -> None:
        checked = 0.0
        while not halt.is_set():
            self._driver.progressed.clear()
            try:
                await self._driver.tick(fencing_token)
                if time.monotonic() - checked >= LIVENESS_EVERY_S:
                    checked = time.monotonic()
                    await self._liveness.check(now_ms())
            except Exception:
                log.exception("control loop tick failed")
            await pause(self._driver.progressed, self._tick_s)

    async def _stop_driving(self) -> None:
        if self._drive is not None:
            self._halt.set()
            self._driver.progressed.set()  # ends the loop's pause at once
            await stop(self._drive)
            self._drive = None
        await self._driver.cancel()
