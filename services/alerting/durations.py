"""Durations written as Prometheus and Alertmanager write them: ``30s``, ``5m``, ``1h30m``."""

from __future__ import annotations

import re

_UNITS_MS = {"y": 365 * 86_400_000, "w": 7 * 86_400_000, "d": 86_400_000,
             "h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}  # fmt: skip
_DURATION = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_ORDER = ("y", "w", "d", "h", "m", "s", "ms")


def parse_duration_ms(text: str) -> int:
    """Milliseconds in ``text`` (units y w d h m s ms, largest first); ValueError if malformed."""
    stripped = text.strip()
    if stripped == "0":
        return 0
    match = _DURATION.match(stripped)
    if not stripped or match is None:
        raise ValueError(f"malformed duration {text!r}; expected e.g. 500ms, 30s, 5m, 1h30m")
    return sum(
        int(n) * _UNITS_MS[unit] for n, unit in zip(match.groups(), _ORDER, strict=True) if n
    )
