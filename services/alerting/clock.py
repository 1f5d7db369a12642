"""The time source of the alerting domain, injected so tests can drive it."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]
"""Returns the current time in unix milliseconds."""


def wall_clock_ms() -> int:
    """The system clock in unix milliseconds."""
    return time.time_ns() // 1_000_000
