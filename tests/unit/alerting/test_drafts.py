import math

import pytest

from fedmesh.errors import InvalidArgument
from fedmesh.services.alerting.drafts import MAX_FUTURE_MS, Drafter
from fedmesh.services.alerting.fingerprint import fingerprint
from fedmesh.services.alerting.model import AnomalyReport, Event, Severity
from fedmesh.services.alerting.rule_file import parse_rulebook

RULES = """\
route:
  receivers: [log]
  group_by: [alertname, run]
  routes:
    - matchers: ['severity="critical"']
      group_by: [alertname]
events:
  round_failed:
    alert: RoundFailed
    severity: high
    resolve_timeout: 1h
    labels: {component: coordinator}
    annotations:
      summary: "Round {round} of run {run} failed ({source})"
anomaly:
  alert: NodeAnomaly
  resolve_timeout: 5m
  max_new_alerts_per_minute: 9
  bands:
    - {min_score: 0.9, severity: critical}
    - {min_score: 0.5, severity: medium}
  annotations:
    summary: "Node {node} in {region} scored {score:.2f}"
"""
NOW = 1_700_000_000_000


@pytest.fixture
def drafter() -> Drafter:
    return Drafter(parse_rulebook(RULES, "test"))


def event(**overrides: object) -> Event:
    fields: dict[str, object] = {
        "kind": "round_failed",
        "source": "coordinator",
        "labels": {"run": "r1", "round": "3"},
        "annotations": {"reason": "deadline passed"},
    }
    fields.update(overrides)
    return Event(**fields)  # type: ignore[arg-type]


def test_an_event_becomes_its_rules_alert(drafter: Drafter) -> None:
    draft = drafter.from_event(event(), NOW)

    assert draft.name == "RoundFailed"
    assert draft.labels == {
        "alertname": "RoundFailed",
        "severity": "high",
        "component": "coordinator",
        "run": "r1",
        "round": "3",
    }
    assert draft.fingerprint == fingerprint(draft.labels)
    assert draft.annotations == {
        "summary": "Round 3 of run r1 failed (coordinator)",
        "reason": "deadline passed",
    }
    assert draft.severity is Severity.HIGH
    assert draft.starts_unix_ms == NOW
    assert draft.resolve_timeout_ms == 3_600_000
    assert draft.route.path == "root"
    assert draft.group_key == 'root:{alertname="RoundFailed",run="r1"}'
    assert draft.group_labels == {"alertname": "RoundFailed", "run": "r1"}
    assert not draft.resolve


def test_the_events_severity_overrides_the_rules_and_picks_the_route(drafter: Drafter) -> None:
    draft = drafter.from_event(event(severity=Severity.CRITICAL, time_unix_ms=NOW - 5), NOW)

    assert draft.labels["severity"] == "critical"
    assert draft.route.path == "root.0"
    assert draft.group_key == 'root.0:{alertname="RoundFailed"}'
    assert draft.starts_unix_ms == NOW - 5


def test_the_same_labels_give_the_same_alert_whatever_the_annotations(drafter: Drafter) -> None:
    first = drafter.from_event(event(), NOW)
    again = drafter.from_event(event(annotations={"reason": "other"}, resolve=True), NOW + 1)
    other_round = drafter.from_event(event(labels={"run": "r1", "round": "4"}), NOW)

    assert again.fingerprint == first.fingerprint
    assert again.resolve
    assert other_round.fingerprint != first.fingerprint


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"kind": "round_exploded"}, "unknown event kind 'round_exploded'; the rules (test) know"),
        ({"kind": ""}, "unknown event kind ''"),
        ({"source": ""}, "source (the emitting service) is required"),
        ({"labels": {"alertname": "X"}}, "label 'alertname' is reserved"),
        ({"labels": {"severity": "high"}}, "the event's severity field sets severity"),
        ({"labels": {"bad-name": "x"}}, "label name 'bad-name' is invalid"),
        ({"annotations": {"d": "x" * 9000}}, "annotation 'd' has 9000 characters"),
        ({"time_unix_ms": -1}, "time_unix_ms is -1; expected 0 (now) or a positive time"),
        ({"time_unix_ms": NOW + MAX_FUTURE_MS + 1}, "ms in the future"),
    ],
)
def test_malformed_events_are_refused_with_the_reason(
    drafter: Drafter, overrides: dict[str, object], reason: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        drafter.from_event(event(**overrides), NOW)
    assert reason in str(info.value)


def report(score: float, **overrides: object) -> AnomalyReport:
    fields: dict[str, object] = {
        "node_id": "n7",
        "score": score,
        "features": {"loss_rate": 0.31, "latency": 120.0},
        "model_name": "mesh-detector",
        "model_version": 4,
        "region": "r2",
    }
    fields.update(overrides)
    return AnomalyReport(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("score", "severity"),
    [
        (1.0, Severity.CRITICAL),
        (0.9, Severity.CRITICAL),
        (0.89, Severity.MEDIUM),
        (0.5, Severity.MEDIUM),
    ],
)
def test_an_anomaly_in_a_band_fires_that_bands_alert(
    drafter: Drafter, score: float, severity: Severity
) -> None:
    band, drafts = drafter.from_anomaly(report(score), NOW)

    assert band is severity
    assert len(drafts) == 1
    draft = drafts[0]
    assert draft.labels == {
        "alertname": "NodeAnomaly",
        "severity": severity.label,
        "node": "n7",
        "region": "r2",
    }
    assert draft.annotations["summary"] == f"Node n7 in r2 scored {score:.2f}"
    assert draft.annotations["score"] == f"{score:.4f}"
    assert draft.annotations["model"] == "mesh-detector v4"
    assert draft.annotations["features"] == "latency=120, loss_rate=0.31"
    assert draft.source == "node:n7"
    assert draft.max_new_per_minute == 9
    assert not draft.resolve


def test_an_anomaly_below_every_band_resolves_the_nodes_alerts_of_every_band(
    drafter: Drafter,
) -> None:
    band, drafts = drafter.from_anomaly(report(0.2), NOW)
    fired = [drafter.from_anomaly(report(s), NOW)[1][0] for s in (0.95, 0.6)]

    assert band is None
    assert all(d.resolve for d in drafts)
    assert [d.fingerprint for d in drafts] == [d.fingerprint for d in fired]


def test_a_report_without_region_has_no_region_label(drafter: Drafter) -> None:
    _, drafts = drafter.from_anomaly(report(0.95, region=""), NOW)
    assert "region" not in drafts[0].labels


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"score": math.nan}, "score must be a finite number in [0, 1]; got nan"),
        ({"score": 1.5}, "score must be a finite number in [0, 1]; got 1.5"),
        ({"score": -0.1}, "score must be a finite number in [0, 1]; got -0.1"),
        ({"node_id": ""}, "node_id is required"),
        ({"model_name": ""}, "model_name is required"),
        ({"model_version": -1}, "model_version must be 0 or more; got -1"),
        ({"features": {"cpu": math.inf}}, "feature 'cpu' is inf; expected a finite number"),
        ({"features": {"cpu load": 0.5}}, "feature name 'cpu load' is invalid"),
        ({"region": "r" * 200}, "region has 200 characters; at most 128 are accepted"),
    ],
)
def test_malformed_reports_are_refused_with_the_reason(
    drafter: Drafter, overrides: dict[str, object], reason: str
) -> None:
    score = overrides.pop("score", 0.95)
    with pytest.raises(InvalidArgument) as info:
        drafter.from_anomaly(report(score, **overrides), NOW)  # type: ignore[arg-type]
    assert reason in str(info.value)
