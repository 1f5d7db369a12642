"""From an event or an anomaly report to the alert it fires or resolves (validated).

Everything here is pure: the rule book decides name, labels, severity,
annotations and route; the fingerprint of the labels is the alert's identity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from fedmesh.errors import InvalidArgument
from fedmesh.services.alerting.fingerprint import (
    LABEL_NAME,
    MAX_NAME_CHARS,
    check_annotations,
    check_labels,
    fingerprint,
)
from fedmesh.services.alerting.model import AnomalyReport, Event, Severity
from fedmesh.services.alerting.rulebook import RESERVED_LABELS, Route, RuleBook, group_of
from fedmesh.services.alerting.templates import Template

MAX_FUTURE_MS = 5 * 60_000
"""How far ahead of the server's clock an event's time may be (clock skew)."""
MAX_FEATURES = 64


@dataclass(frozen=True)
class AlertDraft:
    """What one event does to one alert: fire (or re-fire) it, or resolve it."""

    fingerprint: str
    name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    severity: Severity
    starts_unix_ms: int
    resolve_timeout_ms: int
    max_new_per_minute: int
    route: Route
    group_key: str
    group_labels: Mapping[str, str]
    source: str
    resolve: bool = False
    can_inhibit: bool = False


def _check_time(time_unix_ms: int | None, now_ms: int) -> int:
    if time_unix_ms is None:
        return now_ms
    if time_unix_ms < 0:
        raise InvalidArgument(
            f"time_unix_ms is {time_unix_ms}; expected 0 (now) or a positive time"
        )
    if time_unix_ms > now_ms + MAX_FUTURE_MS:
        raise InvalidArgument(
            f"time_unix_ms is {time_unix_ms - now_ms} ms in the future; expected at most "
            f"{MAX_FUTURE_MS} ms ahead of the server clock"
        )
    return time_unix_ms


def _check_text(value: str, what: str, *, required: bool, limit: int = MAX_NAME_CHARS) -> None:
    if required and not value:
        raise InvalidArgument(f"{what} is required")
    if len(value) > limit:
        raise InvalidArgument(f"{what} has {len(value)} characters; at most {limit} are accepted")


def _render(templates: Mapping[str, Template], values: Mapping[str, object]) -> dict[str, str]:
    return {name: template.render(values) for name, template in templates.items()}


class Drafter:
    """Applies a rule book to events and anomaly reports."""

    def __init__(self, rulebook: RuleBook) -> None:
        self._rules = rulebook

    def _draft(
        self,
        labels: dict[str, str],
        annotations: dict[str, str],
        severity: Severity,
        starts_ms: int,
        resolve_timeout_ms: int,
        max_new_per_minute: int,
        source: str,
        resolve: bool,
    ) -> AlertDraft:
        route = self._rules.route.match(labels)
        group_key, group_labels = group_of(route, labels)
        can_inhibit = self._rules.can_inhibit(labels)
        return AlertDraft(
            fingerprint=fingerprint(labels),
            name=labels["alertname"],
            labels=labels,
            annotations=annotations,
            severity=severity,
            starts_unix_ms=starts_ms,
            resolve_timeout_ms=resolve_timeout_ms,
            max_new_per_minute=max_new_per_minute,
            route=route,
            group_key=group_key,
            group_labels=group_labels,
            source=source,
            resolve=resolve,
            can_inhibit=can_inhibit,
        )

    def from_event(self, event: Event, now_ms: int) -> AlertDraft:
        """The alert ``event`` fires or resolves; InvalidArgument says what is malformed."""
        rule = self._rules.events.get(event.kind)
        if rule is None:
            known = ", ".join(sorted(self._rules.events))
            raise InvalidArgument(
                f"unknown event kind {event.kind!r}; the rules ({self._rules.source}) know {known}"
            )
        _check_text(event.source, "source (the emitting service)", required=True)
        check_labels(event.labels)
        check_annotations(event.annotations)
        for name in RESERVED_LABELS & event.labels.keys():
            raise InvalidArgument(
                f"label {name!r} is reserved: the rule sets alertname, and the event's "
                "severity field sets severity"
            )
        severity = event.severity or rule.severity
        labels = {
            **event.labels,
            **rule.labels,
            "alertname": rule.alert,
            "severity": severity.label,
        }
        values = {**labels, **event.annotations, "kind": event.kind, "source": event.source}
        annotations = {**event.annotations, **_render(rule.annotations, values)}
        return self._draft(
            labels,
            annotations,
            severity,
            _check_time(event.time_unix_ms, now_ms),
            rule.resolve_timeout_ms,
            rule.max_new_per_minute,
            event.source,
            event.resolve,
        )

    def from_anomaly(
        self, report: AnomalyReport, now_ms: int
    ) -> tuple[Severity | None, list[AlertDraft]]:
        """The band of the score and its drafts.

        A score in a band fires that band's alert for the node; a score below
        every band resolves the node's anomaly alerts of every band.
        """
        _check_report(report)
        rule = self._rules.anomaly
        starts = _check_time(report.time_unix_ms, now_ms)
        severity = rule.severity_for(report.score)
        source = f"node:{report.node_id}"
        features = ", ".join(
            f"{name}={report.features[name]:g}" for name in sorted(report.features)
        )
        bands = [severity] if severity is not None else [band.severity for band in rule.bands]
        drafts = []
        for band in bands:
            labels = {
                **rule.labels,
                "alertname": rule.alert,
                "severity": band.label,
                "node": report.node_id,
            }
            if report.region:
                labels["region"] = report.region
            values = {
                **labels,
                "score": report.score,
                "model_name": report.model_name,
                "model_version": report.model_version,
                "features": features,
            }
            annotations = {
                **_render(rule.annotations, values),
                "score": f"{report.score:.4f}",
                "model": f"{report.model_name} v{report.model_version}",
                "features": features,
            }
            drafts.append(
                self._draft(
                    labels,
                    annotations,
                    band,
                    starts,
                    rule.resolve_timeout_ms,
                    rule.max_new_per_minute,
                    source,
                    resolve=severity is None,
                )
            )
        return severity, drafts


def _check_report(report: AnomalyReport) -> None:
    _check_text(report.node_id, "node_id", required=True)
    _check_text(report.region, "region", required=False)
    _check_text(report.model_name, "model_name", required=True)
    if not math.isfinite(report.score) or not 0.0 <= report.score <= 1.0:
        raise InvalidArgument(f"score must be a finite number in [0, 1]; got {report.score!r}")
    if report.model_version < 0:
        raise InvalidArgument(f"model_version must be 0 or more; got {report.model_version}")
    if len(report.features) > MAX_FEATURES:
        raise InvalidArgument(
            f"{len(report.features)} features given; at most {MAX_FEATURES} are accepted"
        )
    for name, value in report.features.items():
        if not LABEL_NAME.match(name) or len(name) > MAX_NAME_CHARS:
            raise InvalidArgument(
                f"feature name {name!r} is invalid; expected [a-zA-Z_][a-zA-Z0-9_]*"
            )
        if not math.isfinite(value):
            raise InvalidArgument(f"feature {name!r} is {value!r}; expected a finite number")
