import ast
import importlib.util
from pathlib import Path

import pytest

from fedmesh.services.alerting.model import Severity
from fedmesh.services.alerting.rule_file import load_rulebook, parse_rulebook
from fedmesh.services.alerting.yaml_nodes import RuleFileError

EMITTED_KINDS = {
    "round_failed",
    "quorum_missed",
    "node_stale",
    "node_banned",
    "update_rejected",
    "byzantine_suspected",
    "privacy_budget_80",
    "privacy_budget_exhausted",
    "aggregation_slow",
    "chain_verification_failed",
    "model_tampered",
    "run_finished",
    "sink_failing",
    "mesh_partition",
}

MINIMAL = """\
route:
  receivers: [log]
events:
  round_failed:
    alert: RoundFailed
    severity: high
anomaly:
  alert: NodeAnomaly
  bands:
    - {min_score: 0.5, severity: medium}
"""


def test_the_packaged_rules_cover_every_event_the_services_emit() -> None:
    rules = load_rulebook()

    assert set(rules.events) == EMITTED_KINDS
    assert rules.events["run_finished"].severity is Severity.INFO
    assert rules.events["privacy_budget_exhausted"].severity is Severity.CRITICAL
    assert rules.source == "default_rules.yaml (packaged)"
    assert len(rules.inhibit_rules) == 4


def detector_bands() -> list[tuple[float, str]]:
    """SEVERITY_BANDS of fedmesh.model.severity, read from its source (importing it loads torch)."""
    spec = importlib.util.find_spec("fedmesh.model")
    assert spec is not None
    assert spec.submodule_search_locations
    source = Path(next(iter(spec.submodule_search_locations)), "severity.py").read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign) and ast.unparse(node.target) == "SEVERITY_BANDS":
            assert node.value is not None
            return list(ast.literal_eval(node.value))
    raise AssertionError("fedmesh.model.severity defines no SEVERITY_BANDS")


def test_the_packaged_anomaly_bands_are_the_detectors() -> None:
    bands = load_rulebook().anomaly.bands
    assert [(b.min_score, b.severity.label) for b in bands] == detector_bands()
    rule = load_rulebook().anomaly
    assert rule.severity_for(0.9) is Severity.CRITICAL
    assert rule.severity_for(0.8999) is Severity.HIGH
    assert rule.severity_for(0.7) is Severity.HIGH
    assert rule.severity_for(0.5) is Severity.MEDIUM
    assert rule.severity_for(0.4999) is None


def test_routes_inherit_and_match_deepest_first() -> None:
    rules = parse_rulebook(
        MINIMAL.replace(
            "  receivers: [log]\n",
            """  receivers: [log, webhook]
  group_by: [alertname]
  group_wait: 10s
  routes:
    - matchers: ['severity="critical"']
      group_wait: 1s
      routes:
        - matchers: ['region=~"r[12]"']
          receivers: [alertmanager]
    - matchers: ['severity="info"']
""",
        ),
        "test",
    )
    root = rules.route
    critical_r1 = root.match({"severity": "critical", "region": "r1"})
    assert critical_r1.path == "root.0.0"
    assert critical_r1.receivers == ("alertmanager",)
    assert critical_r1.group_wait_ms == 1_000
    assert critical_r1.group_by == ("alertname",)
    assert root.match({"severity": "critical", "region": "r3"}).path == "root.0"
    assert root.match({"severity": "info"}).group_wait_ms == 10_000
    assert root.match({"severity": "high"}) is root
    assert root.find("root.0.0") is critical_r1
    assert root.find("root.7") is None
    # Alertmanager's defaults where nothing is said.
    assert (root.group_interval_ms, root.repeat_interval_ms) == (300_000, 14_400_000)


def test_a_missing_file_is_refused_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(RuleFileError, match="cannot read the rule file"):
        load_rulebook(tmp_path / "absent.yaml")


def test_a_file_is_read_from_the_path(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(MINIMAL)
    assert load_rulebook(path).source == str(path)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "    severity: high\n",
            "    severity: urgent\n",
            "test:6: events.round_failed.severity: unknown severity 'urgent'; "
            "expected one of critical, high, medium, info",
        ),
        (
            "  receivers: [log]\n",
            "  receivers: [pager]\n",
            "test:2: route.receivers must list some of alertmanager, webhook, log; got ['pager']",
        ),
        (
            "  receivers: [log]\n",
            "  receivers: [log]\n  group_wait: soon\n",
            "test:3: route.group_wait: malformed duration 'soon'",
        ),
        (
            "  receivers: [log]\n",
            "  receivers: [log]\n  group_interval: 0s\n",
            "test:3: route.group_interval must be longer than 0s",
        ),
        (
            "  receivers: [log]\n",
            "  receivers: [log]\n  recievers: [log]\n",
            "test:3: route has unknown key 'recievers'",
        ),
        (
            "    alert: RoundFailed\n",
            "    alert: Round Failed\n",
            "test:5: events.round_failed.alert 'Round Failed' must match",
        ),
        (
            "  round_failed:\n",
            "  RoundFailed:\n",
            "test:4: event kind 'RoundFailed' must match [a-z][a-z0-9_]*",
        ),
        (
            "    severity: high\n",
            "    severity: high\n    labels: {alertname: X}\n",
            "test:7: events.round_failed.labels may not set 'alertname'",
        ),
        (
            "    severity: high\n",
            "    severity: high\n    labels: {bad-name: X}\n",
            "test:7: a key of events.round_failed.labels: label name 'bad-name' is invalid",
        ),
        (
            "    severity: high\n",
            "    severity: high\n    annotations: {summary: 'Round {round'}\n",
            "test:7: events.round_failed.annotations.summary: malformed template",
        ),
        (
            "    severity: high\n",
            "    severity: high\n  round_failed:\n    alert: Again\n    severity: high\n",
            "test:7: events has 'round_failed' twice",
        ),
        (
            "    - {min_score: 0.5, severity: medium}\n",
            "    - {min_score: 0.5, severity: medium}\n    - {min_score: 0.7, severity: high}\n",
            "test:11: anomaly.bands[1].min_score 0.7 must be below the previous band's 0.5",
        ),
        (
            "    - {min_score: 0.5, severity: medium}\n",
            "    - {min_score: 1.5, severity: medium}\n",
            "test:10: anomaly.bands[0].min_score must be in (0, 1]; got 1.5",
        ),
        (
            "    - {min_score: 0.5, severity: medium}\n",
            "    - {min_score: high, severity: medium}\n",
            "test:10: anomaly.bands[0].min_score must be a number; got 'high'",
        ),
        (
            "  bands:\n    - {min_score: 0.5, severity: medium}\n",
            "  bands: []\n",
            "test:9: anomaly.bands must list at least one band",
        ),
        ("anomaly:\n", "anomalies:\n", "test:7: the rule file has unknown key 'anomalies'"),
        ("    alert: RoundFailed\n", "", "test:5: events.round_failed is missing 'alert'"),
        (
            "  receivers: [log]\n",
            "  receivers: [log]\n  routes:\n    - group_wait: 1s\n",
            "test:4: route root.0 needs matchers (only the root route matches all)",
        ),
        (
            "  receivers: [log]\n",
            "  receivers: [log]\n  routes:\n    - matchers: ['region=~\"r[\"']\n",
            "test:4: an item of route root.0.matchers: matcher region=~'r[' "
            "has an invalid regular expression",
        ),
        (
            "  receivers: [log]\n",
            "  receivers: [log]\n  group_by: [region, region]\n",
            "test:3: route.group_by lists 'region' twice",
        ),
        ("route:\n", "route: [\n", "test:3: malformed YAML"),
        (
            "  receivers: [log]\n",
            "  receivers: ~\n",
            "test:2: route.receivers must be a list",
        ),
    ],
)
def test_bad_rule_files_are_refused_with_line_and_reason(old: str, new: str, message: str) -> None:
    assert old in MINIMAL
    with pytest.raises(RuleFileError) as info:
        parse_rulebook(MINIMAL.replace(old, new, 1), "test")
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "inhibit_rules:\n  - source_matchers: []\n    target_matchers: ['a=b']\n",
            "test:12: inhibit_rules[0].source_matchers must list at least one matcher",
        ),
        (
            "inhibit_rules:\n  - source_matchers: ['a=b']\n    target_matchers: ['c=d']\n"
            "    equal: ['-']\n",
            "test:14: an item of inhibit_rules[0].equal: label name '-' is invalid",
        ),
        (
            "global:\n  resolve_timeout: 0s\n",
            "test:12: global.resolve_timeout must be longer than 0s",
        ),
        (
            "global:\n  max_new_alerts_per_minute: -1\n",
            "test:12: global.max_new_alerts_per_minute must be at least 0; got -1",
        ),
    ],
)
def test_bad_optional_sections_are_refused(extra: str, message: str) -> None:
    with pytest.raises(RuleFileError) as info:
        parse_rulebook(MINIMAL + extra, "test")
    assert str(info.value).startswith(message), str(info.value)


def test_empty_file_is_refused() -> None:
    with pytest.raises(RuleFileError, match="test:1: the rule file is empty"):
        parse_rulebook("# nothing\n", "test")


def test_global_defaults_apply_to_rules_without_their_own() -> None:
    rules = parse_rulebook(
        "global:\n  resolve_timeout: 1m\n  max_new_alerts_per_minute: 7\n" + MINIMAL, "test"
    )
    assert rules.events["round_failed"].resolve_timeout_ms == 60_000
    assert rules.events["round_failed"].max_new_per_minute == 7
    assert rules.anomaly.resolve_timeout_ms == 60_000
