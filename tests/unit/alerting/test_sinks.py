"""Payload shapes and HTTP outcome classification of the sinks."""

import logging

import httpx
import pytest

from fedmesh.services.alerting.alertmanager_sink import HORIZON_SLACK_MS, postable_alert
from fedmesh.services.alerting.log_sink import LogSink
from fedmesh.services.alerting.model import AlertState, Severity
from fedmesh.services.alerting.notification import Notification, NotifiedAlert
from fedmesh.services.alerting.sinks import DeliveryError, post_json, redact_url, rfc3339
from fedmesh.services.alerting.webhook_sink import ZERO_TIME, webhook_payload

T0 = 1_700_000_000_123


def alert(node: str, status: AlertState, **annotations: str) -> NotifiedAlert:
    return NotifiedAlert(
        fingerprint=f"{node:0>16}",
        name="NodeStale",
        status=status,
        labels={"alertname": "NodeStale", "region": "r1", "node": node},
        annotations={"summary": f"Node {node} is stale", **annotations},
        severity=Severity.MEDIUM,
        starts_unix_ms=T0,
        ends_unix_ms=0 if status is AlertState.FIRING else T0 + 1000,
        count=3,
        source="coordinator",
        acknowledged_by="oncall" if node == "n1" else "",
    )


NOTIFICATION = Notification(
    id="nid-1",
    receiver="webhook",
    group_key='root:{alertname="NodeStale",region="r1"}',
    group_labels={"alertname": "NodeStale", "region": "r1"},
    alerts=(
        alert("n1", AlertState.FIRING, runbook="docs/alerting.md"),
        alert("n2", AlertState.RESOLVED, runbook="docs/alerting.md"),
    ),
    created_unix_ms=T0 + 2000,
    repeat_interval_ms=3_600_000,
)


def test_redact_url_drops_credentials_query_and_fragment() -> None:
    assert (
        redact_url("https://user:pw@hooks.example.com:8443/a/b?token=s3cret#x")
        == "https://hooks.example.com:8443/a/b?…"
    )
    assert redact_url("http://am:9093") == "http://am:9093"


def test_rfc3339_is_alertmanagers_time_format() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(T0) == "2023-11-14T22:13:20.123Z"


def test_webhook_payload_is_alertmanagers_webhook_format_plus_our_fields() -> None:
    payload = webhook_payload(NOTIFICATION, "https://alerting.example")

    assert payload["version"] == "4"
    assert payload["notificationId"] == "nid-1"
    assert payload["status"] == "firing"
    assert payload["commonLabels"] == {"alertname": "NodeStale", "region": "r1"}
    assert payload["commonAnnotations"] == {"runbook": "docs/alerting.md"}
    firing, resolved = payload["alerts"]
    assert firing["endsAt"] == ZERO_TIME
    assert firing["acknowledgedBy"] == "oncall"
    assert resolved["status"] == "resolved"
    assert resolved["endsAt"] == rfc3339(T0 + 1000)
    assert resolved["generatorURL"] == f"https://alerting.example/alerts/{'n2':0>16}"


def test_alertmanager_keeps_firing_alerts_past_the_next_repeat_and_ends_resolved_ones() -> None:
    delivered = T0 + 7_200_000  # two hours late, after an outage
    firing = postable_alert(NOTIFICATION.alerts[0], NOTIFICATION, "http://x/alerts/1", delivered)
    resolved = postable_alert(NOTIFICATION.alerts[1], NOTIFICATION, "http://x/alerts/2", delivered)

    assert firing == {
        "labels": {"alertname": "NodeStale", "region": "r1", "node": "n1"},
        "annotations": {"summary": "Node n1 is stale", "runbook": "docs/alerting.md"},
        "startsAt": rfc3339(T0),
        "endsAt": rfc3339(delivered + 3_600_000 + HORIZON_SLACK_MS),
        "generatorURL": "http://x/alerts/1",
    }
    assert resolved["endsAt"] == rfc3339(T0 + 1000)


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (503, True), (429, True), (408, True), (400, False), (404, False)],
)
async def test_http_answers_are_classified(status: int, retryable: bool) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, text="nope"))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(DeliveryError) as info:
            await post_json(client, "http://hooks/x?token=s3cret", {"a": 1})

    assert info.value.retryable is retryable
    assert str(info.value) == f"HTTP {status}: nope"


async def test_success_and_connection_failures_without_leaking_the_url() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/down":
            raise httpx.ConnectError("cannot reach http://hooks/down?token=s3cret")
        return httpx.Response(204)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        await post_json(client, "http://hooks/up", {"a": 1})
        with pytest.raises(DeliveryError) as info:
            await post_json(client, "http://hooks/down?token=s3cret", {"a": 1})

    assert info.value.retryable
    assert str(info.value) == "connection failed (ConnectError)"


async def test_the_log_sink_writes_one_record_per_alert(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fedmesh.alerts"):
        await LogSink().send(NOTIFICATION)

    records = [r for r in caplog.records if r.name == "fedmesh.alerts"]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.WARNING, "alert firing: NodeStale"),
        (logging.INFO, "alert resolved: NodeStale"),
    ]
    fields = records[0].__dict__["fields"]
    assert fields["fingerprint"] == f"{'n1':0>16}"
    assert fields["labels"]["node"] == "n1"
    assert fields["notification_id"] == "nid-1"
