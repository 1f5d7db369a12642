"""Stopping background tasks for sure (coordinator loops, node agents, test fleets).

Under Python 3.11, ``asyncio.wait_for`` swallows a cancellation that arrives as
the call it wraps completes (fixed in 3.12). redis-py wraps every command it
sends in ``wait_for`` when a socket timeout is set, so one ``cancel()`` of a
task that talks to Redis is sometimes lost and the task runs on. The loops
therefore also check a flag between steps (and ``pause`` on it instead of
sleeping), and ``stop`` cancels again a task that still runs after a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger(__name__)

RECANCEL_AFTER_S = 5.0


async def pause(flag: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less when ``flag`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await flag.wait()


async def stop(task: asyncio.Task[Any], recancel_after_s: float = RECANCEL_AFTER_S) -> None:
    """Cancel ``task`` and wait until it ends, cancelling it again while it still runs.

    A task already being cancelled is not cancelled again at once: the pause
    between cancellations lets its own clean-up (releasing a lease, closing
    streams) finish undisturbed.
    """
    if not task.done() and not task.cancelling():
        task.cancel()
    while not task.done():
        await asyncio.wait({task}, timeout=recancel_after_s)
        if not task.done():
            task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        error = task.exception()
        if error is not None:
            fields = {"task": task.get_name(), "error": repr(error)}
            log.warning("background task failed", extra={"fields": fields})
