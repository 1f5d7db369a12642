"""The rules in force: event rules, the anomaly rule, the route tree and inhibition rules.

Built from a rule file by :mod:`fedmesh.services.alerting.rule_file`; immutable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from fedmesh.services.alerting.matchers import Matcher, matches_all
from fedmesh.services.alerting.model import Severity
from fedmesh.services.alerting.templates import Template

RECEIVERS = ("alertmanager", "webhook", "log")
"""The sinks a route may name; one that is not configured is skipped."""

RESERVED_LABELS = frozenset({"alertname", "severity"})
"""Labels the rules set; events and rule labels may not."""


@dataclass(frozen=True)
class EventRule:
    """How events of one kind become an alert."""

    kind: str
    alert: str
    severity: Severity
    labels: Mapping[str, str]
    annotations: Mapping[str, Template]
    resolve_timeout_ms: int
    max_new_per_minute: int


@dataclass(frozen=True)
class SeverityBand:
    """Scores at or above ``min_score`` (and below the next band) get ``severity``."""

    min_score: float
    severity: Severity


@dataclass(frozen=True)
class AnomalyRule:
    """How a node's anomaly score becomes an alert."""

    alert: str
    bands: tuple[SeverityBand, ...]
    labels: Mapping[str, str]
    annotations: Mapping[str, Template]
    resolve_timeout_ms: int
    max_new_per_minute: int

    def severity_for(self, score: float) -> Severity | None:
        """The band of ``score`` (bands are highest first); None below every band."""
        for band in self.bands:
            if score >= band.min_score:
                return band.severity
        return None


@dataclass(frozen=True)
class Route:
    """A node of the routing tree: which alerts, grouped how, notified when, to which sinks."""

    path: str
    matchers: tuple[Matcher, ...]
    receivers: tuple[str, ...]
    group_by: tuple[str, ...]
    group_wait_ms: int
    group_interval_ms: int
    repeat_interval_ms: int
    routes: tuple[Route, ...] = ()

    def match(self, labels: Mapping[str, str]) -> Route:
        """The deepest route whose matchers hold, first matching child first (no ``continue``)."""
        for child in self.routes:
            if matches_all(child.matchers, labels):
                return child.match(labels)
        return self

    def find(self, path: str) -> Route | None:
        """The route at ``path`` (``root``, ``root.0``, …), if the tree still has it."""
        if path == self.path:
            return self
        for child in self.routes:
            if path == child.path or path.startswith(child.path + "."):
                return child.find(path)
        return None


def group_of(route: Route, labels: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The group key of an alert and its group labels, as Alertmanager spells them."""
    group_labels = {name: labels[name] for name in route.group_by if name in labels}
    spelled = ",".join(
        f"{name}={json.dumps(value)}" for name, value in sorted(group_labels.items())
    )
    return f"{route.path}:{{{spelled}}}", group_labels


@dataclass(frozen=True)
class InhibitRule:
    """A firing source alert mutes target alerts that agree with it on ``equal`` labels."""

    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]


@dataclass(frozen=True)
class RuleBook:
    """Everything a rule file says, validated."""

    source: str
    events: Mapping[str, EventRule]
    anomaly: AnomalyRule
    route: Route
    inhibit_rules: tuple[InhibitRule, ...]

    def can_inhibit(self, labels: Mapping[str, str]) -> bool:
        """Whether an alert with ``labels`` matches the source side of an inhibition rule."""
        return any(matches_all(rule.source, labels) for rule in self.inhibit_rules)
