"""Why a firing alert is muted now: the active silences and the inhibitions in force."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from fedmesh.services.alerting.inhibition import Inhibitor
from fedmesh.services.alerting.model import NOT_MUTED, Alert, Mute
from fedmesh.services.alerting.rulebook import InhibitRule
from fedmesh.services.alerting.silences import Silence


class MuteBook:
    """A snapshot of what mutes alerts at one moment."""

    def __init__(
        self,
        silences: Sequence[Silence],
        inhibit_rules: Iterable[InhibitRule],
        firing: Iterable[Alert],
        now_ms: int,
    ) -> None:
        self._silences = [s for s in silences if s.active(now_ms)]
        self._inhibitor = Inhibitor(inhibit_rules, firing)

    def mute(self, alert: Alert) -> Mute:
        """The silences and alerts muting ``alert``; resolved alerts are never muted."""
        if not alert.firing:
            return NOT_MUTED
        silenced = tuple(s.id for s in self._silences if s.mutes(alert.labels))
        inhibited = self._inhibitor.inhibited_by(alert)
        if not silenced and not inhibited:
            return NOT_MUTED
        return Mute(silenced, inhibited)
