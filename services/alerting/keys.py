"""Redis keys of the alerting service, all under the hash tag ``{alerting}``.

One hash tag puts every alerting key in one cluster slot, so a Lua script may
touch an alert, its group and the indexes in one atomic step.
"""

from __future__ import annotations

PREFIX = "fm:{alerting}"


def alert_key(fingerprint: str) -> str:
    """Hash: one alert (labels, state, times, dedup count, acknowledgement)."""
    return f"{PREFIX}:alert:{fingerprint}"


def firing_key() -> str:
    """Sorted set: firing fingerprints by the time they resolve unless re-fired (ms)."""
    return f"{PREFIX}:firing"


def resolved_key() -> str:
    """Sorted set: resolved fingerprints by their end time (ms), pruned after retention."""
    return f"{PREFIX}:resolved"


def group_key(group: str) -> str:
    """Hash: one alert group (route, group labels, version, last notification)."""
    return f"{PREFIX}:group:{group}"


def group_members_key(group: str) -> str:
    """Set: fingerprints of the alerts in a group."""
    return f"{group_key(group)}:alerts"


def group_notified_key(group: str) -> str:
    """Set: fingerprints the group last notified as firing (owed a resolved notice)."""
    return f"{group_key(group)}:notified"


def inhibit_sources_key() -> str:
    """Set: firing fingerprints whose labels match an inhibition rule's source matchers."""
    return f"{PREFIX}:inhibit-sources"


def groups_due_key() -> str:
    """Sorted set: group keys by the time their next flush is due (ms)."""
    return f"{PREFIX}:groups:due"


def stats_key() -> str:
    """Hash: service counters (events received, rate-limited events)."""
    return f"{PREFIX}:stats"


def rate_key(alert_name: str, window: int) -> str:
    """Counter: new alerts of ``alert_name`` opened in one rate-limit window."""
    return f"{PREFIX}:rate:{alert_name}:{window}"


def silence_key(silence_id: str) -> str:
    """String: one silence as JSON."""
    return f"{PREFIX}:silence:{silence_id}"


def silences_key() -> str:
    """Sorted set: silence ids by end time (ms)."""
    return f"{PREFIX}:silences"


def outbox_key(sink: str) -> str:
    """List: notifications waiting for ``sink``, oldest first (the durable outbox)."""
    return f"{PREFIX}:outbox:{sink}"


def dead_letter_key(sink: str) -> str:
    """List: notifications ``sink`` never took, newest first, capped."""
    return f"{PREFIX}:dead:{sink}"


def sink_key(sink: str) -> str:
    """Hash: delivery state of ``sink`` (counters, consecutive failures, next attempt)."""
    return f"{PREFIX}:sink:{sink}"


def changes_channel() -> str:
    """Pub/sub channel: the fingerprint of every alert whose state changed."""
    return f"{PREFIX}:changes"
