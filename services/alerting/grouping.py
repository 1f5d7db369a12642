"""When a group notifies, and what — Alertmanager's group_wait / group_interval / repeat_interval.

A group is first flushed ``group_wait`` after its first alert, then every
``group_interval``. A flush notifies when an unmuted firing alert was not in the
last notification, when an alert that was notified as firing has resolved, or
when ``repeat_interval`` has passed since the last notification and something
still fires. Resolved alerts leave the group at the flush.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

from fedmesh.services.alerting.model import NOT_MUTED, Alert, Mute


@dataclass(frozen=True)
class FlushPlan:
    """The outcome of one flush of one group."""

    notify: bool
    firing: tuple[Alert, ...]
    resolved: tuple[Alert, ...]
    leaving: frozenset[str]
    notified: frozenset[str]


def plan_flush(
    alerts: Sequence[Alert],
    mutes: Mapping[str, Mute],
    notified: Set[str],
    last_notified_ms: int,
    now_ms: int,
    repeat_interval_ms: int,
) -> FlushPlan:
    """Decide one flush.

    ``notified`` holds the fingerprints last notified as firing; a previously
    notified alert that is muted now stays in it, so its resolution is still sent.
    """
    firing = tuple(a for a in alerts if a.firing and not mutes.get(a.fingerprint, NOT_MUTED).muted)
    resolved = tuple(a for a in alerts if not a.firing and a.fingerprint in notified)
    new = any(a.fingerprint not in notified for a in firing)
    repeat = bool(firing) and (
        last_notified_ms == 0 or now_ms - last_notified_ms >= repeat_interval_ms
    )
    notify = new or bool(resolved) or repeat
    leaving = frozenset(a.fingerprint for a in alerts if not a.firing)
    still_firing = {a.fingerprint for a in alerts if a.firing}
    kept = (notified & still_firing) | ({a.fingerprint for a in firing} if notify else set())
    return FlushPlan(
        notify=notify,
        firing=firing if notify else (),
        resolved=resolved if notify else (),
        leaving=leaving,
        notified=frozenset(kept),
    )
