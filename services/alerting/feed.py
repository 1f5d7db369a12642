"""Alert changes as a live feed: one Redis subscription fanned out to every watcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from fedmesh.errors import ResourceExhausted
from fedmesh.services.alerting import keys

log = logging.getLogger(__name__)

MAX_BACKLOG = 10_000
RESUBSCRIBE_S = 1.0
POLL_S = 1.0


class Subscription:
    """Fingerprints of changed alerts for one watcher, in order."""

    def __init__(self, backlog: int) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue(backlog)
        self._overflowed = False

    def offer(self, fingerprint: str) -> None:
        """Queue a change; a watcher that fell ``backlog`` changes behind is cut off."""
        try:
            self._queue.put_nowait(fingerprint)
        except asyncio.QueueFull:
            self._overflowed = True

    async def next_batch(self, timeout_s: float) -> list[str]:
        """Wait up to ``timeout_s`` for a change, then take every change waiting (distinct)."""
        if self._overflowed:
            raise ResourceExhausted(
                f"the watcher fell more than {self._queue.maxsize} alert changes behind; "
                "watch again to resynchronise"
            )
        try:
            batch = [await asyncio.wait_for(self._queue.get(), timeout_s)]
        except TimeoutError:
            return []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return list(dict.fromkeys(batch))


class AlertFeed:
    """Subscribes to the changes channel once and offers each change to every watcher."""

    def __init__(self, redis: aioredis.Redis, backlog: int = MAX_BACKLOG) -> None:
        self._redis = redis
        self._backlog = backlog
        self._subscriptions: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stopping = False

    async def start(self) -> None:
        """Subscribe; returns once changes are being received."""
        self._task = asyncio.create_task(self._pump())
        await self._ready.wait()

    async def stop(self) -> None:
        """Unsubscribe."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscription]:
        """A subscription for the duration of the block."""
        subscription = Subscription(self._backlog)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)

    async def _pump(self) -> None:
        # Polls rather than listens, so a cancellation lost in Redis I/O still ends it.
        while not self._stopping:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.changes_channel())
                self._ready.set()
                while not self._stopping:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=POLL_S
                    )
                    if message is not None and message.get("type") == "message":
                        for subscription in list(self._subscriptions):
                            subscription.offer(str(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away: subscribe again
                log.warning("alert feed lost its subscription; resubscribing", exc_info=True)
                await asyncio.sleep(RESUBSCRIBE_S)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
