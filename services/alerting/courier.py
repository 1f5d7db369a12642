"""Delivery: one courier per sink takes notifications from its outbox, oldest first.

A failure is retried with exponential backoff and jitter until it succeeds or
the retry window closes (or the sink refuses the payload for good); a sink that
keeps failing raises its own ``sink_failing`` alert, resolved at its next success.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass

from fedmesh.errors import FedmeshError
from fedmesh.services.alerting.clock import Clock
from fedmesh.services.alerting.intake import Intake
from fedmesh.services.alerting.metrics import AlertingMetrics
from fedmesh.services.alerting.model import Event
from fedmesh.services.alerting.outbox import Head, Outbox
from fedmesh.services.alerting.sinks import DeliveryError, Sink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How deliveries are retried and when a sink counts as unhealthy."""

    base_s: float = 1.0
    max_s: float = 300.0
    give_up_after_s: float = 86_400.0
    unhealthy_after: int = 5
    idle_s: float = 1.0


def backoff_s(policy: RetryPolicy, failures: int, rng: random.Random) -> float:
    """Wait before the next attempt: exponential in ``failures``, capped, half of it jittered."""
    ceiling = min(policy.max_s, policy.base_s * 2.0 ** max(0, failures - 1))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


class SinkAlarm:
    """Raises and resolves the ``sink_failing`` alert of a sink through the intake."""

    def __init__(self, intake: Intake) -> None:
        self._intake = intake

    async def failing(self, sink: str, failures: int, last_error: str) -> None:
        """Fire (or re-fire) the sink's alert."""
        await self._emit(
            Event(
                kind="sink_failing",
                source="alerting",
                labels={"sink": sink},
                annotations={"failures": str(failures), "last_error": last_error},
            )
        )

    async def recovered(self, sink: str) -> None:
        """Resolve the sink's alert."""
        await self._emit(
            Event(kind="sink_failing", source="alerting", labels={"sink": sink}, resolve=True)
        )

    async def _emit(self, event: Event) -> None:
        try:
            await self._intake.emit(event)
        except FedmeshError as exc:
            log.warning("could not raise the sink alarm", extra={"fields": {"reason": str(exc)}})


class Courier:
    """Delivers one sink's outbox."""

    def __init__(
        self,
        sink: Sink,
        outbox: Outbox,
        policy: RetryPolicy,
        clock: Clock,
        alarm: SinkAlarm,
        metrics: AlertingMetrics,
        rng: random.Random | None = None,
    ) -> None:
        self.sink = sink
        self._outbox = outbox
        self._policy = policy
        self._clock = clock
        self._alarm = alarm
        self._metrics = metrics
        self._rng = rng or random.Random()
        self._next_attempt_ms = 0
        self._failures = 0
        self._stopping = False
        self.wake = asyncio.Event()

    def stop(self) -> None:
        """End :meth:`run` at its next turn."""
        self._stopping = True
        self.wake.set()

    async def resume(self) -> None:
        """Continue the backoff recorded before a restart."""
        counters = await self._outbox.counters(self.sink.name)
        self._next_attempt_ms = counters.next_attempt_unix_ms
        self._failures = counters.consecutive_failures

    async def deliver_next(self) -> float | None:
        """Try the oldest notification if its time has come.

        Returns the seconds to wait before calling again (0 when more may be
        sent now), or None when the outbox is empty.
        """
        name = self.sink.name
        head = await self._outbox.head(name)
        if head is None:
            return None
        now = self._clock()
        if now < self._next_attempt_ms:
            return (self._next_attempt_ms - now) / 1000
        try:
            await self.sink.send(head.notification)
        except DeliveryError as exc:
            return await self._failed(head, str(exc), exc.retryable, now)
        except Exception as exc:  # a bug in a sink must not stop delivery to it
            log.exception("sink raised unexpectedly", extra={"fields": {"sink": name}})
            return await self._failed(head, f"unexpected {type(exc).__name__}", True, now)
        before = await self._outbox.delivered(name, head, self._clock())
        self._metrics.deliveries.labels(name, "delivered").inc()
        self._next_attempt_ms = 0
        self._failures = 0
        if before >= self._policy.unhealthy_after:
            log.info("sink recovered", extra={"fields": {"sink": name, "failures": before}})
            await self._alarm.recovered(name)
        return 0.0

    async def _failed(self, head: Head, error: str, retryable: bool, now: int) -> float:
        name = self.sink.name
        age_s = (now - head.notification.created_unix_ms) / 1000
        if not retryable or age_s >= self._policy.give_up_after_s:
            reason = error if not retryable else f"gave up after {age_s:.0f} s: {error}"
            failures = await self._outbox.give_up(name, head, reason)
            self._metrics.deliveries.labels(name, "given_up").inc()
            self._next_attempt_ms = 0
            delay = 0.0
            log.error(
                "notification dropped",
                extra={
                    "fields": {"sink": name, "notification": head.notification.id, "reason": reason}
                },
            )
        else:
            delay = backoff_s(self._policy, self._failures + 1, self._rng)
            self._next_attempt_ms = now + round(delay * 1000)
            failures = await self._outbox.failed(name, error, self._next_attempt_ms)
            self._metrics.deliveries.labels(name, "failed").inc()
            log.warning(
                "delivery failed; retrying",
                extra={
                    "fields": {
                        "sink": name,
                        "failures": failures,
                        "error": error,
                        "retry_in_s": round(delay, 3),
                    }
                },
            )
        self._failures = failures
        if failures >= self._policy.unhealthy_after:
            await self._alarm.failing(name, failures, error)
        return delay

    async def run(self) -> None:
        """Deliver until :meth:`stop`; woken early when a notification is queued."""
        with contextlib.suppress(Exception):
            await self.resume()
        while not self._stopping:
            self.wake.clear()
            try:
                delay = await self.deliver_next()
            except Exception:  # Redis away: keep the courier alive and try again
                log.exception("delivery loop error", extra={"fields": {"sink": self.sink.name}})
                delay = self._policy.idle_s
            if delay == 0.0:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.wake.wait(), delay if delay is not None else self._policy.idle_s
                )
