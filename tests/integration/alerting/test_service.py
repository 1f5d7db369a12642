"""The alerting service over gRPC: intake, dedup, reads, watch, silences, acks, restarts."""

import asyncio
import math

import grpc
import pytest

from fedmesh.client.alerting import AlertState, Event, Severity
from fedmesh.proto.alerting.v1 import alerting_pb2 as pb
from fedmesh.proto.alerting.v1 import alerting_pb2_grpc as pb_grpc
from fedmesh.rpc import open_channel

from .conftest import Receiver, StartAlerting, Until

FEATURES = {"rssi": -88.0, "loss_rate": 0.31, "latency": 140.0}


async def test_anomaly_reports_fire_alerts_with_the_severity_of_their_band(
    start_alerting: StartAlerting,
) -> None:
    alerting = await start_alerting()
    client = alerting.client

    results = [
        await client.report_anomaly(f"n{i}", score, FEATURES, "mesh-detector", 3, "r1")
        for i, score in enumerate((0.95, 0.75, 0.55, 0.3))
    ]
    high_and_worse = await client.list_alerts(min_severity=Severity.HIGH)

    assert [(r.severity, r.alerted) for r in results] == [
        (Severity.CRITICAL, True),
        (Severity.HIGH, True),
        (Severity.MEDIUM, True),
        (None, False),
    ]
    assert results[3].fingerprint == ""
    assert [(a.labels["node"], a.severity) for a in high_and_worse] == [
        ("n0", Severity.CRITICAL),
        ("n1", Severity.HIGH),
    ]
    alert = high_and_worse[0]
    assert alert.fingerprint == results[0].fingerprint
    assert alert.labels == {
        "alertname": "NodeAnomaly",
        "severity": "critical",
        "node": "n0",
        "region": "r1",
    }
    assert alert.annotations["summary"] == "Node n0 looks anomalous (score 0.95)"
    assert alert.annotations["model"] == "mesh-detector v3"
    assert alert.source == "node:n0"
    assert alert.state is AlertState.FIRING


async def test_ten_thousand_identical_events_are_one_alert_and_one_notification(
    start_alerting: StartAlerting, receiver: Receiver, until: Until
) -> None:
    alerting = await start_alerting()
    event = Event("round_failed", "coordinator", {"run": "r1", "round": "3"})

    for _ in range(10):
        await alerting.client.emit_batch([event] * 1000)
    alerts = await alerting.client.list_alerts()

    assert [(a.name, a.count) for a in alerts] == [("RoundFailed", 10_000)]
    assert (await alerting.client.status()).events_received == 10_000

    async def notified() -> bool:
        return len(receiver.accepted()) >= 1

    await until(notified)
    await asyncio.sleep(0.5)  # five group intervals: a second notification would be here by now
    bodies = receiver.accepted()
    assert len(bodies) == 1
    assert [a["fingerprint"] for a in bodies[0]["alerts"]] == [alerts[0].fingerprint]


async def test_auto_resolve_and_explicit_resolve_reach_the_webhook(
    start_alerting: StartAlerting, receiver: Receiver, until: Until
) -> None:
    alerting = await start_alerting()
    client = alerting.client
    stale = await client.emit("node_stale", source="coordinator", labels={"node": "n1"})
    failed = await client.emit("round_failed", source="coordinator", labels={"run": "r1"})

    async def both_notified() -> bool:
        return {
            a["fingerprint"]
            for body in receiver.accepted()
            for a in body["alerts"]
            if a["status"] == "firing"
        } == {stale.fingerprint, failed.fingerprint}

    await until(both_notified)
    resolved = await client.emit(
        "round_failed", source="coordinator", labels={"run": "r1"}, resolve=True
    )

    async def both_resolved() -> bool:
        return len(await client.list_alerts(state=AlertState.RESOLVED)) == 2

    await until(both_resolved)

    async def resolutions_sent() -> bool:
        return {
            a["fingerprint"]
            for body in receiver.accepted()
            for a in body["alerts"]
            if a["status"] == "resolved"
        } == {stale.fingerprint, failed.fingerprint}

    await until(resolutions_sent)
    assert (resolved.state, resolved.count) == (AlertState.RESOLVED, 1)
    assert await client.list_alerts(state=AlertState.FIRING) == []


async def test_a_silence_suppresses_and_its_expiry_restores(
    start_alerting: StartAlerting, receiver: Receiver, until: Until
) -> None:
    alerting = await start_alerting()
    client = alerting.client
    silence = await client.create_silence(
        ['alertname="MeshPartition"', "region=~r[12]"],
        duration_s=3600,
        created_by="oncall",
        comment="planned maintenance",
    )
    fired = await client.emit("mesh_partition", source="mesh", labels={"region": "r1"})
    await asyncio.sleep(0.3)
    suppressed = await client.list_alerts(state=AlertState.SUPPRESSED)
    silent_webhook = receiver.accepted()

    expired = await client.expire_silence(silence.id)

    async def notified() -> bool:
        return any(
            a["fingerprint"] == fired.fingerprint for b in receiver.accepted() for a in b["alerts"]
        )

    await until(notified)
    assert [(a.fingerprint, a.silenced_by) for a in suppressed] == [
        (fired.fingerprint, (silence.id,))
    ]
    assert silent_webhook == []
    assert expired.expired
    assert (await client.list_alerts(state=AlertState.FIRING))[0].fingerprint == fired.fingerprint
    listed = await client.list_silences()
    assert [(s.id, s.matchers, s.comment) for s in listed] == [
        (silence.id, ('alertname="MeshPartition"', 'region=~"r[12]"'), "planned maintenance")
    ]


async def test_inhibited_alerts_show_what_inhibits_them(start_alerting: StartAlerting) -> None:
    client = (await start_alerting()).client
    partition = await client.emit("mesh_partition", source="mesh", labels={"region": "r1"})
    stale = await client.emit(
        "node_stale", source="coordinator", labels={"node": "n1", "region": "r1"}
    )

    suppressed = await client.list_alerts(state=AlertState.SUPPRESSED)

    assert [(a.fingerprint, a.inhibited_by) for a in suppressed] == [
        (stale.fingerprint, (partition.fingerprint,))
    ]
    assert (await client.status()).suppressed == 1


async def test_watch_sends_the_firing_alerts_then_every_change(
    start_alerting: StartAlerting,
) -> None:
    client = (await start_alerting()).client
    first = await client.emit("round_failed", source="coordinator", labels={"run": "r1"})
    seen = []
    stream = client.watch(min_severity=Severity.MEDIUM)

    seen.append(await anext(stream))
    second = await client.report_anomaly("n4", 0.92, FEATURES, "mesh-detector", 3, "r2")
    seen.append(await anext(stream))
    await client.acknowledge(first.fingerprint, by="oncall")
    seen.append(await anext(stream))
    await client.emit("round_failed", source="coordinator", labels={"run": "r1"}, resolve=True)
    seen.append(await anext(stream))
    await stream.aclose()

    assert [(a.fingerprint, a.state, a.acknowledged_by) for a in seen] == [
        (first.fingerprint, AlertState.FIRING, ""),
        (second.fingerprint, AlertState.FIRING, ""),
        (first.fingerprint, AlertState.FIRING, "oncall"),
        (first.fingerprint, AlertState.RESOLVED, "oncall"),
    ]


async def test_status_reports_counts_sinks_and_rules(
    start_alerting: StartAlerting, receiver: Receiver, until: Until
) -> None:
    client = (await start_alerting()).client
    await client.emit("round_failed", source="coordinator", labels={"run": "r1"})
    await client.create_silence(["alertname=Nothing"], duration_s=60, created_by="oncall")

    async def delivered() -> bool:
        return len(receiver.accepted()) == 1

    await until(delivered)
    status = await client.status()

    assert (status.firing, status.suppressed, status.resolved, status.silences) == (1, 0, 0, 1)
    assert (status.groups, status.events_received, status.rate_limited) == (1, 1, 0)
    assert status.rules_source.endswith("rules.yaml")
    sinks = {s.name: s for s in status.sinks}
    assert set(sinks) == {"log", "webhook"}
    webhook = sinks["webhook"]
    assert webhook.healthy
    assert (webhook.delivered, webhook.failed, webhook.queued) == (1, 0, 0)
    assert "s3cret" not in webhook.target
    assert webhook.target.endswith("/hooks/fedmesh?…")


async def test_a_restart_keeps_firing_alerts_groups_silences_and_acks(
    start_alerting: StartAlerting, receiver: Receiver, until: Until
) -> None:
    first = await start_alerting()
    fired = await first.client.emit("round_failed", source="coordinator", labels={"run": "r1"})
    for _ in range(4):
        await first.client.emit("round_failed", source="coordinator", labels={"run": "r1"})
    silence = await first.client.create_silence(
        ["alertname=NodeStale"], duration_s=3600, created_by="oncall"
    )
    await first.client.acknowledge(fired.fingerprint, by="oncall")

    async def notified() -> bool:
        return len(receiver.accepted()) == 1

    await until(notified)
    await first.stack.aclose()

    second = await start_alerting()
    alerts = await second.client.list_alerts()
    silences = await second.client.list_silences()
    await second.client.emit(
        "round_failed", source="coordinator", labels={"run": "r1"}, resolve=True
    )

    async def resolution_sent() -> bool:
        return len(receiver.accepted()) == 2

    await until(resolution_sent)
    assert [(a.fingerprint, a.count, a.acknowledged_by) for a in alerts] == [
        (fired.fingerprint, 5, "oncall")
    ]
    assert [s.id for s in silences] == [silence.id]
    statuses = [[a["status"] for a in body["alerts"]] for body in receiver.accepted()]
    assert statuses == [["firing"], ["resolved"]]


async def emit_error(port: int, request: pb.EmitRequest) -> grpc.aio.AioRpcError:
    async with open_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pb_grpc.AlertingServiceStub(channel).Emit(request)
    return info.value


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (
            pb.Event(kind="round_exploded", source="coordinator"),
            "unknown event kind 'round_exploded'",
        ),
        (
            pb.Event(kind="round_failed", source="coordinator", severity=9),  # type: ignore[arg-type]
            "event.severity 9 is not a known severity; expected SEVERITY_INFO, SEVERITY_MEDIUM, "
            "SEVERITY_HIGH, SEVERITY_CRITICAL",
        ),
        (pb.Event(kind="round_failed"), "source (the emitting service) is required"),
        (
            pb.Event(kind="round_failed", source="c", labels={"bad-name": "x"}),
            "label name 'bad-name' is invalid",
        ),
        (
            pb.Event(kind="round_failed", source="c", labels={"severity": "high"}),
            "label 'severity' is reserved",
        ),
    ],
)
async def test_malformed_events_are_invalid_argument_and_change_nothing(
    start_alerting: StartAlerting, event: pb.Event, message: str
) -> None:
    alerting = await start_alerting()

    error = await emit_error(alerting.port, pb.EmitRequest(event=event))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (error.details() or "")
    assert await alerting.client.list_alerts() == []
    assert (await alerting.client.status()).events_received == 0


async def test_a_batch_with_one_bad_event_stores_none(start_alerting: StartAlerting) -> None:
    alerting = await start_alerting()
    good = Event("round_failed", "coordinator", {"run": "r1"})
    bad = Event("round_failed", "coordinator", {"run": "r1", "2x": "y"})

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await alerting.client.emit_batch([good, bad])

    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("event 1 ('round_failed'): label name '2x'")
    assert await alerting.client.list_alerts() == []


async def test_a_missing_event_and_a_bad_anomaly_report_are_refused(
    start_alerting: StartAlerting,
) -> None:
    alerting = await start_alerting()
    missing = await emit_error(alerting.port, pb.EmitRequest())

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await alerting.client.report_anomaly("n1", math.nan, FEATURES, "mesh-detector", 3, "r1")

    assert missing.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert missing.details() == "event is required"
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "score must be a finite number in [0, 1]; got nan"
    assert await alerting.client.list_alerts() == []


@pytest.mark.parametrize(
    ("matchers", "message"),
    [
        (
            [pb.Matcher(name="node", value="n[", is_regex=True, is_equal=True)],
            "invalid regular expression",
        ),
        ([pb.Matcher(name="bad-name", value="x", is_equal=True)], "matcher label name 'bad-name'"),
        ([], "a silence needs at least one matcher"),
        (
            [pb.Matcher(name="node", value=".*", is_regex=True, is_equal=True)],
            "would silence everything",
        ),
    ],
)
async def test_invalid_silences_are_invalid_argument_and_change_nothing(
    start_alerting: StartAlerting, matchers: list[pb.Matcher], message: str
) -> None:
    client = (await start_alerting()).client

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.create_silence(matchers, duration_s=60, created_by="oncall")

    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (info.value.details() or "")
    assert await client.list_silences() == []


async def test_acknowledge_and_expire_refuse_what_they_cannot_find(
    start_alerting: StartAlerting,
) -> None:
    client = (await start_alerting()).client

    with pytest.raises(grpc.aio.AioRpcError) as malformed:
        await client.acknowledge("NOT-A-FINGERPRINT", by="oncall")
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await client.acknowledge("0123456789abcdef", by="oncall")
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await client.acknowledge("0123456789abcdef", by="")
    with pytest.raises(grpc.aio.AioRpcError) as no_silence:
        await client.expire_silence("4f9c0d8e-0000-0000-0000-000000000000")

    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expected 16 lowercase hexadecimal digits" in (malformed.value.details() or "")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert anonymous.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (anonymous.value.details() or "").startswith("by is required")
    assert no_silence.value.code() == grpc.StatusCode.NOT_FOUND
