"""End to end: the four services as subprocesses, 3 in-process nodes, 2 FedAvg rounds."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from fedmesh.cli.demo import MODEL_NAME, DemoSettings, NodeFleet, _publish_initial_model, _spec
from fedmesh.cli.stack import SERVICES, LocalStack
from fedmesh.client.alerting import Alert, AlertingClient, Severity
from fedmesh.client.coordinator import CoordinatorClient
from fedmesh.client.local_data import LocalData, simulated_clients
from fedmesh.client.registry import RegistryClient
from fedmesh.client.signing import verify_update
from fedmesh.client.watch import AnomalyWatch, Scan
from fedmesh.model import AnomalyDetector
from fedmesh.proto.aggregator.v1 import aggregator_pb2 as agg_pb
from fedmesh.proto.coordinator.v1 import coordinator_pb2 as pb
from fedmesh.rpc import open_channel
from fedmesh.telemetry import JsonLinesSpanExporter
from fedmesh.tensors import decode, manifest_of

pytestmark = pytest.mark.timeout(400)
RunResult = tuple[pb.GetRunResponse, int, list[int], list[LocalData]]
SIGNING_KEYS: dict[str, bytes] = {}
"""The public key of each node of the fleet, by node id (the run fills it in)."""


class WireRecorder:
    """Keeps every request message the nodes send (one interceptor per kind of call)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Message]] = []

    def interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        return [_Unary(self.sent), _ServerStream(self.sent), _ClientStream(self.sent)]


class _Unary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, sent: list[tuple[str, Message]]) -> None:
        self.sent = sent

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.sent.append((_method(details), request))
        return await continuation(details, request)


class _ServerStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, sent: list[tuple[str, Message]]) -> None:
        self.sent = sent

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        self.sent.append((_method(details), request))
        return await continuation(details, request)


class _ClientStream(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, sent: list[tuple[str, Message]]) -> None:
        self.sent = sent

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        method = _method(details)

        async def tee() -> AsyncIterator[Any]:
            if isinstance(requests, AsyncIterable):
                async for item in requests:
                    self.sent.append((method, item))
                    yield item
            else:
                for item in requests:
                    self.sent.append((method, item))
                    yield item

        return await continuation(details, tee())


def _method(details: Any) -> str:
    method = details.method
    return str(method.decode() if isinstance(method, bytes) else method)


RECORDER = WireRecorder()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    workdir = tmp_path_factory.mktemp("stack")
    trace_file = workdir / "spans.jsonl"
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(trace_file)))
    with LocalStack(workdir, extra_env={"FEDMESH_TRACE_FILE": str(trace_file)}) as running:
        yield running
    assert all(s.process is None or s.process.poll() is not None for s in running.services.values())


def test_every_service_is_serving_and_reflects_its_services(stack: LocalStack) -> None:
    for name in SERVICES:
        with grpc.insecure_channel(stack.services[name].address) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            replies = reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
            listed = {s.name for r in replies for s in r.list_services_response.service}
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert f"fedmesh.{name}.v1.{name.capitalize()}Service" in listed
        assert "grpc.health.v1.Health" in listed


async def _run_two_rounds(stack: LocalStack) -> RunResult:
    settings = DemoSettings(workdir=stack.workdir, report_dir=stack.workdir, nodes=3, rounds=2,
                            mesh_nodes=120, steps=80, local_epochs=3, seed=3)  # fmt: skip
    _, clients = await asyncio.to_thread(simulated_clients, settings.mesh(), 3, settings.steps, 3)
    async with (
        open_channel(stack.services["registry"].address) as registry_channel,
        open_channel(stack.services["coordinator"].address) as coordinator_channel,
    ):
        registry = RegistryClient(registry_channel)
        coordinator = CoordinatorClient(coordinator_channel)
        initial = await _publish_initial_model(registry, seed=3)
        fleet = NodeFleet(stack, clients, seed=3, interceptors=RECORDER.interceptors())
        await fleet.start()
        SIGNING_KEYS.update({node: s.public_key for node, s in fleet.signers.items()})
        try:
            deadline = time.monotonic() + 60
            while (
                len([n for n in await coordinator.list_nodes() if n.state == pb.NODE_STATE_ONLINE])
                < 3
            ):
                assert time.monotonic() < deadline, "nodes did not register"
                await asyncio.sleep(0.2)
            run = await coordinator.start_run(_spec(settings))
            deadline = time.monotonic() + 240
            while (
                state := await coordinator.get_run(run.run_id)
            ).run.status == pb.RUN_STATUS_RUNNING:
                assert time.monotonic() < deadline, f"run did not finish: {state}"
                await asyncio.sleep(0.5)
        finally:
            await fleet.stop()
        versions = [v.ref.version for v in (await registry.list_versions(MODEL_NAME)).versions]
    return state, initial, versions, clients


@pytest.fixture(scope="module")
def finished_run(stack: LocalStack) -> RunResult:
    return asyncio.run(_run_two_rounds(stack))


def test_two_rounds_complete_with_consecutive_versions(
    finished_run: RunResult,
) -> None:
    state, initial, versions, _ = finished_run

    assert state.run.status == pb.RUN_STATUS_COMPLETED
    assert [r.phase for r in state.rounds] == [pb.ROUND_PHASE_COMPLETED] * 2
    assert all(sorted(r.received) == sorted(r.participants) for r in state.rounds)
    assert [r.result_model.version for r in state.rounds] == [initial + 1, initial + 2]
    assert sorted(versions) == [initial, initial + 1, initial + 2]
    assert state.run.model.version == initial + 2


def test_one_round_is_one_trace_across_processes(
    stack: LocalStack, finished_run: RunResult
) -> None:
    spans = [json.loads(line) for line in (stack.workdir / "spans.jsonl").read_text().splitlines()]
    node_tasks = [
        s for s in spans if s["name"] == "node-task" and s["attributes"].get("round") == "1"
    ]
    assert len(node_tasks) == 3
    trace_ids = {s["trace_id"] for s in node_tasks}
    assert len(trace_ids) == 1, "the three nodes' work on round 1 is not in one trace"
    in_trace = [s for s in spans if s["trace_id"] in trace_ids]
    services = {s["service"] for s in in_trace}
    assert {"coordinator", "aggregator", "registry"} <= services
    names = {s["name"] for s in in_trace}
    assert any("SubmitUpdate" in n for n in names)
    assert any("AggregateRound" in n for n in names)
    assert any("PublishModel" in n for n in names)
    assert any("DownloadModel" in n for n in names)


SEVERITY_BANDS = ((0.9, Severity.CRITICAL), (0.7, Severity.HIGH), (0.5, Severity.MEDIUM))


def band(score: float) -> Severity:
    return next(severity for bound, severity in SEVERITY_BANDS if score >= bound)


async def _detect(stack: LocalStack, run: RunResult) -> tuple[list[Scan], list[Alert]]:
    state, _, _, clients = run
    async with (
        open_channel(stack.services["registry"].address) as registry_channel,
        open_channel(stack.services["alerting"].address) as alerting_channel,
    ):
        registry, alerting = RegistryClient(registry_channel), AlertingClient(alerting_channel)
        await registry.promote(MODEL_NAME, state.run.model.version, reason="e2e")
        watches = [AnomalyWatch(c, registry, alerting, MODEL_NAME, 0.1) for c in clients]
        scans = [
            scan
            for watch, client in zip(watches, clients, strict=True)
            for _ in client.held_out
            if (scan := await watch.scan()) is not None
        ]
        alerts = await alerting.list_alerts()
    return scans, alerts


def test_nodes_report_injected_faults_as_alerts_with_their_severity(
    stack: LocalStack, finished_run: RunResult
) -> None:
    scans, alerts = asyncio.run(_detect(stack, finished_run))

    reports = [(s.model_version, suspect, result) for s in scans for suspect, result in s.reported]
    assert reports, "the production model flagged nothing in the held-out telemetry"
    assert {version for version, _, _ in reports} == {finished_run[0].run.model.version}
    for _, suspect, result in reports:
        assert result.alerted
        assert result.severity is band(suspect.score)
    anomaly_alerts = [a for a in alerts if a.name == "NodeAnomaly"]
    for _, suspect, _ in reports:
        node = f"mesh-{suspect.mesh_node}"
        severities = {a.severity for a in anomaly_alerts if a.labels["node"] == node}
        assert band(suspect.score) in severities, f"no {band(suspect.score)} alert for {node}"


NODE_REQUESTS = {
    "RegisterNodeRequest",
    "HeartbeatRequest",
    "StreamTasksRequest",
    "ReportEvaluationRequest",
    "SubmitUpdateRequest",
    "DownloadModelRequest",
    "GetModelVersionRequest",
}


def test_only_model_tensors_and_metadata_leave_the_nodes(finished_run: RunResult) -> None:
    _, _, _, clients = finished_run
    sent = RECORDER.sent
    assert {type(m).__name__ for _, m in sent} <= NODE_REQUESTS

    model_manifest = manifest_of(AnomalyDetector().state_dict())
    headers = [
        m.header
        for _, m in sent
        if isinstance(m, agg_pb.SubmitUpdateRequest) and m.HasField("header")
    ]
    payload = b"".join(
        m.chunk
        for _, m in sent
        if isinstance(m, agg_pb.SubmitUpdateRequest) and m.HasField("chunk")
    )
    assert len(headers) == 6, "3 nodes × 2 rounds, each update sent once"
    assert len({h.nonce for h in headers}) == 6, "a fresh nonce for every update"
    for h in headers:
        key = SIGNING_KEYS[h.node_id]
        assert verify_update(key, h.signature, h.run_id, h.round, h.node_id, h.nonce, h.digest)
    registered = {
        m.node_id: m.signing_public_key for _, m in sent if isinstance(m, pb.RegisterNodeRequest)
    }
    assert registered == SIGNING_KEYS
    offset = 0
    for header in headers:
        update = payload[offset : offset + header.payload_bytes]
        offset += header.payload_bytes
        assert manifest_of(decode(update)) == model_manifest
    assert offset == len(payload)

    rows = {
        row.numpy().tobytes()
        for c in clients
        for g in c.train + c.validation + c.held_out
        for row in g.x
    }
    small = [
        m.SerializeToString() for _, m in sent if not isinstance(m, agg_pb.SubmitUpdateRequest)
    ]
    assert not any(row in message for message in small for row in rows)
