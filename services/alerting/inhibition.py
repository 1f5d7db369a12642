"""Inhibition: a firing source alert mutes target alerts that agree with it on some labels.

As in Alertmanager: labels listed in ``equal`` must have the same value in both
(a label missing from both counts as equal), and an alert matching both sides of
a rule does not inhibit itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from fedmesh.services.alerting.matchers import matches_all
from fedmesh.services.alerting.model import Alert
from fedmesh.services.alerting.rulebook import InhibitRule


class Inhibitor:
    """The inhibitions in force given the alerts firing now."""

    def __init__(self, rules: Iterable[InhibitRule], firing: Iterable[Alert]) -> None:
        self._rules = tuple(rules)
        sources = [a for a in firing if a.firing]
        self._index: list[dict[tuple[str, ...], list[str]]] = []
        for rule in self._rules:
            by_equal: dict[tuple[str, ...], list[str]] = {}
            for alert in sources:
                if matches_all(rule.source, alert.labels):
                    by_equal.setdefault(_equal_values(rule, alert), []).append(alert.fingerprint)
            self._index.append(by_equal)

    def inhibited_by(self, alert: Alert) -> tuple[str, ...]:
        """Fingerprints of the firing alerts that inhibit ``alert`` (sorted, no duplicates)."""
        found: set[str] = set()
        for rule, by_equal in zip(self._rules, self._index, strict=True):
            if not by_equal or not matches_all(rule.target, alert.labels):
                continue
            for source in by_equal.get(_equal_values(rule, alert), ()):
                if source != alert.fingerprint:
                    found.add(source)
        return tuple(sorted(found))


def _equal_values(rule: InhibitRule, alert: Alert) -> tuple[str, ...]:
    return tuple(alert.labels.get(name, "") for name in rule.equal)
