"""Group commit: the drafts of concurrent calls share one pipelined Redis round trip.

While one pipeline is in flight, new calls queue; the next pipeline takes them
all (and the store folds runs of identical events into one script call), so a
storm of concurrent identical events costs a handful of round trips.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from fedmesh.services.alerting.alert_store import AlertStore, Ingested
from fedmesh.services.alerting.clock import Clock
from fedmesh.services.alerting.drafts import AlertDraft

MAX_DRAFTS_PER_TRIP = 2000


@dataclass(frozen=True)
class _Call:
    drafts: list[AlertDraft]
    counted: list[bool]
    result: asyncio.Future[list[Ingested]]


class IngestBatcher:
    """Feeds the alert store, one pipeline at a time."""

    def __init__(self, store: AlertStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._queue: deque[_Call] = deque()
        self._worker: asyncio.Task[None] | None = None

    async def ingest(
        self, drafts: Sequence[AlertDraft], counted: Sequence[bool] | None = None
    ) -> list[Ingested]:
        """Apply ``drafts`` in order (after the calls queued before); one result each."""
        flags = list(counted) if counted is not None else [True] * len(drafts)
        call = _Call(list(drafts), flags, asyncio.get_running_loop().create_future())
        self._queue.append(call)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await call.result

    def _take(self) -> list[_Call]:
        calls = [self._queue.popleft()]
        size = len(calls[0].drafts)
        while self._queue and size + len(self._queue[0].drafts) <= MAX_DRAFTS_PER_TRIP:
            calls.append(self._queue.popleft())
            size += len(calls[-1].drafts)
        return calls

    async def _drain(self) -> None:
        while self._queue:
            calls = self._take()
            drafts = [d for call in calls for d in call.drafts]
            counted = [c for call in calls for c in call.counted]
            try:
                results = await self._store.ingest_many(drafts, self._clock(), counted)
            except Exception as exc:  # each caller gets the store's error
                for call in calls:
                    if not call.result.done():
                        call.result.set_exception(exc)
                continue
            offset = 0
            for call in calls:
                if not call.result.done():
                    call.result.set_result(results[offset : offset + len(call.drafts)])
                offset += len(call.drafts)
