"""Pushes pending tasks to open StreamTasks calls: one Redis read per interval for all of them.

A replica may hold thousands of node streams; each polling Redis on its own
would cost a round trip per node per interval. The feed reads the pending task
of every node with an open stream in one MGET and wakes only the streams whose
task changed. It runs on every replica, leader or standby, so a node may stream
from any of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from fedmesh.services.coordinator.tasks import Task, TaskBoard
from fedmesh.stopping import pause

log = logging.getLogger(__name__)


class _Watch:
    """One open stream's view of its node's pending task."""

    def __init__(self) -> None:
        self.task: Task | None = None
        self.changed = asyncio.Event()


class TaskFeed:
    """Fans the pending tasks out to the streams that wait for them."""

    def __init__(self, board: TaskBoard, interval_s: float) -> None:
        self._board = board
        self._interval_s = interval_s
        self._watches: dict[str, set[_Watch]] = {}
        self._closed = False
        self._wake = asyncio.Event()
        board.on_assign(self.nudge)

    async def watch(self, node_id: str) -> AsyncIterator[Task]:
        """Each new pending task of ``node_id``: the current one at once, then every change."""
        watch = _Watch()
        self._watches.setdefault(node_id, set()).add(watch)
        try:
            task = await self._board.pending(node_id)
            sent = ""
            while not self._closed:
                if task is not None and task.task_id != sent:
                    sent = task.task_id
                    yield task
                await watch.changed.wait()
                watch.changed.clear()
                task = watch.task
        finally:
            self._watches[node_id].discard(watch)
            if not self._watches[node_id]:
                del self._watches[node_id]

    @property
    def streams(self) -> int:
        """How many streams are open."""
        return sum(len(w) for w in self._watches.values())

    async def run(self) -> None:
        """Poll until closed or cancelled, then end every stream (nodes reconnect elsewhere).

        A failed read (Redis down) is logged and tried again; the streams stay open.
        """
        try:
            while not self._closed:
                try:
                    await self.poll()
                except Exception as exc:  # keep the streams open through a Redis outage
                    log.warning("task feed read failed", extra={"fields": {"error": repr(exc)}})
                await pause(self._wake, self._interval_s)
                self._wake.clear()
        finally:
            self.close()

    def nudge(self) -> None:
        """Read at once instead of at the next interval (tasks were just assigned)."""
        self._wake.set()

    def close(self) -> None:
        """End every open stream; later streams end at once."""
        self._closed = True
        self._wake.set()
        for watches in self._watches.values():
            for watch in watches:
                watch.changed.set()

    async def poll(self) -> None:
        """Read every watched node's pending task once and wake the streams it changed."""
        node_ids = sorted(self._watches)
        for node_id, task in (await self._board.pending_many(node_ids)).items():
            for watch in self._watches.get(node_id, ()):
                if _task_id(task) != _task_id(watch.task):
                    watch.task = task
                    watch.changed.set()


def _task_id(task: Task | None) -> str:
    return task.task_id if task is not None else ""
