"""The alerting domain's values: severities, states, events, alerts, silences."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum


class Severity(IntEnum):
    """One severity scale for every alert (DESIGN §8); higher is worse."""

    INFO = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        """The value of the ``severity`` label: ``critical``, ``high``, ``medium``, ``info``."""
        return self.name.lower()

    @classmethod
    def from_label(cls, text: str) -> Severity:
        """Parse a severity label; ValueError names the accepted ones."""
        try:
            return cls[text.upper()]
        except KeyError:
            accepted = ", ".join(s.label for s in sorted(cls, reverse=True))
            raise ValueError(f"unknown severity {text!r}; expected one of {accepted}") from None


class AlertState(StrEnum):
    """Where an alert is in its life. Suppression is computed, not stored."""

    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Event:
    """Something a service saw: ``round_failed``, ``node_stale``, …"""

    kind: str
    source: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    severity: Severity | None = None
    time_unix_ms: int | None = None
    resolve: bool = False


@dataclass(frozen=True)
class AnomalyReport:
    """A node's detector scored its telemetry as anomalous (or, below every band, not)."""

    node_id: str
    score: float
    features: Mapping[str, float]
    model_name: str
    model_version: int
    region: str = ""
    time_unix_ms: int | None = None


@dataclass(frozen=True)
class Alert:
    """One alert as stored: identity (fingerprint of its labels), state, times, count."""

    fingerprint: str
    name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    severity: Severity
    state: AlertState
    starts_unix_ms: int
    ends_unix_ms: int
    updated_unix_ms: int
    count: int
    group_key: str
    source: str
    acknowledged_by: str = ""
    acknowledged_unix_ms: int = 0

    @property
    def firing(self) -> bool:
        """Whether the alert is firing."""
        return self.state is AlertState.FIRING


@dataclass(frozen=True)
class Mute:
    """Why a firing alert is not notified: the silences and the alerts inhibiting it."""

    silenced_by: tuple[str, ...] = ()
    inhibited_by: tuple[str, ...] = ()

    @property
    def muted(self) -> bool:
        """Whether anything mutes the alert."""
        return bool(self.silenced_by or self.inhibited_by)


NOT_MUTED = Mute()
