"""The server factory and the error translator, with a tiny servicer of the alerting contract."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from fedmesh import errors
from fedmesh.proto.alerting.v1 import alerting_pb2 as pb
from fedmesh.proto.alerting.v1 import alerting_pb2_grpc as pb_grpc
from fedmesh.rpc import ServiceBinding, open_channel, start_server, translate_errors

SERVICE = pb.DESCRIPTOR.services_by_name["AlertingService"].full_name


class Failing(pb_grpc.AlertingServiceServicer):
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    @translate_errors
    async def Emit(self, request: pb.EmitRequest, context: Any) -> pb.EmitResponse:
        raise self.exc

    @translate_errors
    async def WatchAlerts(
        self, request: pb.WatchAlertsRequest, context: Any
    ) -> AsyncIterator[pb.WatchAlertsResponse]:
        yield pb.WatchAlertsResponse(alert=pb.Alert(name="first"))
        raise self.exc


async def call_emit(exc: Exception) -> grpc.aio.AioRpcError:
    servicer = Failing(exc)  # type: ignore[abstract]
    running = await start_server(
        [
            ServiceBinding(
                SERVICE, lambda s: pb_grpc.add_AlertingServiceServicer_to_server(servicer, s)
            )
        ]
    )
    try:
        async with open_channel(f"127.0.0.1:{running.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await pb_grpc.AlertingServiceStub(channel).Emit(pb.EmitRequest())
            return info.value
    finally:
        await running.stop(0)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.InvalidArgument("score is NaN"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.FailedPrecondition("round closed"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.AlreadyExists("other update"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.NotFound("no run"), grpc.StatusCode.NOT_FOUND),
        (errors.ResourceExhausted("too big"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Aborted("lost race"), grpc.StatusCode.ABORTED),
        (errors.DataLoss("tampered"), grpc.StatusCode.DATA_LOSS),
        (errors.PermissionDenied("not you"), grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_domain_errors_become_their_status_with_the_message(
    exc: errors.FedmeshError, code: grpc.StatusCode
) -> None:
    error = await call_emit(exc)
    assert error.code() == code
    assert error.details() == str(exc)


async def test_unexpected_errors_become_internal_without_leaking_the_text() -> None:
    error = await call_emit(RuntimeError("secret=hunter2"))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "hunter2" not in (error.details() or "")
    assert (error.details() or "").startswith("internal error (trace ")


async def test_stream_error_arrives_after_the_items_already_sent() -> None:
    servicer = Failing(errors.NotFound("gone"))  # type: ignore[abstract]
    running = await start_server(
        [
            ServiceBinding(
                SERVICE, lambda s: pb_grpc.add_AlertingServiceServicer_to_server(servicer, s)
            )
        ]
    )
    try:
        async with open_channel(f"127.0.0.1:{running.port}") as channel:
            call = pb_grpc.AlertingServiceStub(channel).WatchAlerts(pb.WatchAlertsRequest())
            first = await call.read()
            assert isinstance(first, pb.WatchAlertsResponse)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call.read()
            assert first.alert.name == "first"
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await running.stop(0)


async def test_health_follows_readiness_and_reflection_lists_services() -> None:
    ready = {"value": False}

    async def readiness() -> bool:
        return ready["value"]

    servicer = Failing(RuntimeError())  # type: ignore[abstract]
    running = await start_server(
        [
            ServiceBinding(
                SERVICE, lambda s: pb_grpc.add_AlertingServiceServicer_to_server(servicer, s)
            )
        ],
        readiness=readiness,
        probe_interval=0.05,
    )
    try:
        async with open_channel(f"127.0.0.1:{running.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=SERVICE)
            first = await health.Check(request)
            ready["value"] = True
            for _ in range(100):
                now = await health.Check(request)
                if now.status == health_pb2.HealthCheckResponse.SERVING:
                    break
                await asyncio.sleep(0.05)
            assert first.status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert now.status == health_pb2.HealthCheckResponse.SERVING
            ready["value"] = False
            for _ in range(100):
                now = await health.Check(request)
                if now.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                await asyncio.sleep(0.05)
            alive = await health.Check(health_pb2.HealthCheckRequest(service="fedmesh.liveness"))
            assert now.status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert alive.status == health_pb2.HealthCheckResponse.SERVING

            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            responses = stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            listed = [s.name async for r in responses for s in r.list_services_response.service]
            assert SERVICE in listed
            assert "grpc.health.v1.Health" in listed
    finally:
        await running.stop(0)


class Silent(pb_grpc.AlertingServiceServicer):
    """Streams one alert, then nothing, forever."""

    async def WatchAlerts(
        self, request: pb.WatchAlertsRequest, context: Any
    ) -> AsyncIterator[pb.WatchAlertsResponse]:
        yield pb.WatchAlertsResponse(alert=pb.Alert(name="only"))
        await asyncio.Event().wait()


async def test_streams_without_a_deadline_get_the_channels_default() -> None:
    servicer = Silent()  # type: ignore[abstract]
    running = await start_server(
        [
            ServiceBinding(
                SERVICE, lambda s: pb_grpc.add_AlertingServiceServicer_to_server(servicer, s)
            )
        ]
    )
    try:
        async with open_channel(f"127.0.0.1:{running.port}", default_timeout=0.5) as channel:
            call = pb_grpc.AlertingServiceStub(channel).WatchAlerts(pb.WatchAlertsRequest())
            first = await call.read()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call.read()
        assert isinstance(first, pb.WatchAlertsResponse)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        await running.stop(0)
