"""Alerting unit fixtures: a small rule book with short timers."""

from __future__ import annotations

import pytest

from fedmesh.services.alerting.rule_file import parse_rulebook
from fedmesh.services.alerting.rulebook import RuleBook

RULES = """\
route:
  receivers: [log, webhook]
  group_by: [alertname, region]
  group_wait: 1s
  group_interval: 10s
  repeat_interval: 1h
events:
  node_stale:
    alert: NodeStale
    severity: medium
    resolve_timeout: 1m
    annotations: {summary: "Node {node} is stale"}
  mesh_partition:
    alert: MeshPartition
    severity: critical
    max_new_alerts_per_minute: 2
  sink_failing:
    alert: AlertSinkFailing
    severity: high
anomaly:
  alert: NodeAnomaly
  bands:
    - {min_score: 0.5, severity: medium}
inhibit_rules:
  - source_matchers: ['alertname="MeshPartition"']
    target_matchers: ['alertname="NodeStale"']
    equal: [region]
"""


@pytest.fixture
def rulebook() -> RuleBook:
    return parse_rulebook(RULES, "test-rules")
