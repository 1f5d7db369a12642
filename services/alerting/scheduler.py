"""The clockwork: resolves expired alerts and flushes due groups, sleeping until the next due."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fedmesh.services.alerting.alert_store import AlertStore
from fedmesh.services.alerting.clock import Clock
from fedmesh.services.alerting.expiry import Expiry
from fedmesh.services.alerting.notifier import Notifier

log = logging.getLogger(__name__)

MIN_SLEEP_S = 0.005
"""Floor of a sleep, so a group that could not be flushed does not spin the loop."""


class Scheduler:
    """Runs :class:`Expiry` and :class:`Notifier` when something is due.

    It sleeps until the earliest group flush or alert expiry stored in Redis,
    at most ``tick_s``, and wakes at once when :meth:`wake` is called (a new
    group, a resolved alert), so a ``group_wait`` of 0 notifies immediately.
    """

    def __init__(
        self, expiry: Expiry, notifier: Notifier, alerts: AlertStore, clock: Clock, tick_s: float
    ) -> None:
        self._expiry = expiry
        self._notifier = notifier
        self._alerts = alerts
        self._clock = clock
        self._tick_s = tick_s
        self._wake = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        """Run a step now."""
        self._wake.set()

    def stop(self) -> None:
        """End :meth:`run` at its next turn."""
        self._stopping = True
        self._wake.set()

    async def step(self) -> float:
        """One pass at the current time; the seconds until the next thing is due."""
        now = self._clock()
        await self._expiry.sweep(now)
        await self._notifier.flush_due(now)
        upcoming = [
            t
            for t in (await self._notifier.next_due_ms(), await self._alerts.next_expiry_ms())
            if t is not None
        ]
        if not upcoming:
            return self._tick_s
        return min(self._tick_s, max(0.0, (min(upcoming) - self._clock()) / 1000))

    async def run(self) -> None:
        """Step until :meth:`stop` (checked each turn: a cancellation may be lost in Redis I/O)."""
        while not self._stopping:
            self._wake.clear()
            try:
                delay = await self.step()
            except Exception:  # Redis away: keep the clockwork alive and try again
                log.exception("scheduler step failed")
                delay = self._tick_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(delay, MIN_SLEEP_S))
