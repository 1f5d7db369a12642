"""The webhook sink against a real HTTP server: payload, outage, recovery, restart."""

from datetime import datetime

from fedmesh.client.alerting import AlertState

from .conftest import Receiver, StartAlerting, Until


def parse_time(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


async def test_every_field_of_the_webhook_payload(
    start_alerting: StartAlerting, receiver: Receiver, until: Until
) -> None:
    client = (await start_alerting()).client
    fired = await client.emit(
        "round_failed",
        source="coordinator",
        labels={"run": "r1", "round": "3"},
        annotations={"reason": "deadline passed"},
    )
    alert = (await client.list_alerts())[0]

    async def delivered() -> bool:
        return len(receiver.accepted()) == 1

    await until(delivered)
    delivery = receiver.deliveries[0]
    body = delivery.body

    assert delivery.path == "/hooks/fedmesh?token=s3cret"
    assert delivery.headers["Authorization"] == "Bearer t0ken"
    assert delivery.headers["Content-Type"] == "application/json"
    assert delivery.headers["Idempotency-Key"] == body["notificationId"]
    labels = {"alertname": "RoundFailed", "severity": "high", "run": "r1", "round": "3"}
    assert set(body) == {
        "version",
        "notificationId",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    }
    assert body["version"] == "4"
    assert body["groupKey"] == 'root:{alertname="RoundFailed"}'
    assert body["truncatedAlerts"] == 0
    assert body["status"] == "firing"
    assert body["receiver"] == "webhook"
    assert body["groupLabels"] == {"alertname": "RoundFailed"}
    assert body["commonLabels"] == labels
    assert body["commonAnnotations"] == {
        "summary": "Round 3 of run r1 failed",
        "reason": "deadline passed",
    }
    assert body["externalURL"] == "https://alerting.example"
    [sent] = body["alerts"]
    assert set(sent) == {
        "status",
        "labels",
        "annotations",
        "startsAt",
        "endsAt",
        "generatorURL",
        "fingerprint",
        "severity",
        "count",
        "source",
        "acknowledgedBy",
    }
    assert sent["status"] == "firing"
    assert sent["labels"] == labels
    assert sent["annotations"] == body["commonAnnotations"]
    assert parse_time(sent["startsAt"]) == alert.starts_unix_ms
    assert sent["endsAt"] == "0001-01-01T00:00:00Z"
    assert sent["generatorURL"] == f"https://alerting.example/alerts/{fired.fingerprint}"
    assert sent["fingerprint"] == fired.fingerprint
    assert sent["severity"] == "high"
    assert sent["count"] == 1
    assert sent["source"] == "coordinator"
    assert sent["acknowledgedBy"] == ""


async def test_a_sink_down_for_a_while_then_back_receives_every_alert_once(
    start_alerting: StartAlerting, receiver: Receiver, until: Until
) -> None:
    receiver.status = 503
    client = (await start_alerting()).client
    fired = [
        (await client.emit("node_stale", source="c", labels={"node": f"n{i}"})).fingerprint
        for i in range(5)
    ]

    async def unhealthy() -> bool:
        sinks = {s.name: s for s in (await client.status()).sinks}
        return not sinks["webhook"].healthy

    await until(unhealthy)
    failing = await client.list_alerts(labels={"alertname": "AlertSinkFailing"})
    down = {s.name: s for s in (await client.status()).sinks}["webhook"]
    receiver.status = 200

    async def recovered() -> bool:
        sinks = {s.name: s for s in (await client.status()).sinks}
        return sinks["webhook"].healthy and sinks["webhook"].queued == 0

    await until(recovered)
    firing = [
        a["fingerprint"]
        for body in receiver.accepted()
        for a in body["alerts"]
        if a["labels"]["alertname"] == "NodeStale" and a["status"] == "firing"
    ]

    assert sorted(firing) == sorted(fired)
    assert receiver.refused() >= 3
    assert down.consecutive_failures >= 3
    assert down.last_error == "HTTP 503: "
    assert down.queued >= 1
    assert [(a.labels["sink"], a.state) for a in failing] == [("webhook", AlertState.FIRING)]
    [sink_alert] = await client.list_alerts(labels={"alertname": "AlertSinkFailing"})
    assert sink_alert.state is AlertState.RESOLVED


async def test_queued_notifications_survive_a_restart(
    start_alerting: StartAlerting, receiver: Receiver, until: Until
) -> None:
    receiver.status = 503
    first = await start_alerting()
    fired = await first.client.emit("round_failed", source="coordinator", labels={"run": "r9"})

    async def attempted() -> bool:
        return receiver.refused() >= 1

    await until(attempted)
    await first.stack.aclose()
    receiver.status = 200
    second = await start_alerting()

    async def delivered() -> bool:
        sinks = {s.name: s for s in (await second.client.status()).sinks}
        return sinks["webhook"].queued == 0 and sinks["webhook"].delivered >= 1

    await until(delivered)
    sent = [a["fingerprint"] for body in receiver.accepted() for a in body["alerts"]]
    assert sent == [fired.fingerprint]
