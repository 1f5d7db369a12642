"""Fixtures of the registry suites: a real registry on port 0 over the real Redis."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
import torch

from fedmesh.client.registry import RegistryClient
from fedmesh.proto.alerting.v1 import alerting_pb2
from fedmesh.proto.registry.v1 import registry_pb2_grpc as pb_grpc
from fedmesh.rpc import ServiceBinding, open_channel, start_server
from fedmesh.services.registry.metrics import RegistryMetrics
from fedmesh.services.registry.server import build
from fedmesh.services.registry.settings import RegistrySettings


@dataclass
class Registry:
    """A running registry: its client, raw stub, settings and Redis."""

    client: RegistryClient
    stub: pb_grpc.RegistryServiceAsyncStub
    settings: RegistrySettings
    redis: aioredis.Redis
    address: str

    def blob_files(self) -> list[Path]:
        """Every file under the blob directory (staging included)."""
        return sorted(p for p in self.settings.blob_dir.rglob("*") if p.is_file())


StartRegistry = Callable[..., contextlib.AbstractAsyncContextManager[Registry]]


@pytest.fixture
def registry_settings(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> RegistrySettings:
    monkeypatch.setenv("FEDMESH_REGISTRY_DATA_DIR", str(tmp_path / "registry"))
    monkeypatch.setenv("FEDMESH_REDIS_URL", redis_url)
    monkeypatch.delenv("FEDMESH_ALERTING_ADDRESS", raising=False)
    return RegistrySettings.from_env()


@pytest.fixture
def start_registry(
    registry_settings: RegistrySettings, redis_client: aioredis.Redis
) -> StartRegistry:
    """Start a registry with the test settings, changed by keyword (``keep_versions=2``)."""

    @contextlib.asynccontextmanager
    async def start(
        chunk_bytes: int = 4096,
        redis: aioredis.Redis | None = None,
        metrics: RegistryMetrics | None = None,
        **changes: Any,
    ) -> AsyncIterator[Registry]:
        settings = dataclasses.replace(registry_settings, **changes)
        store = redis or redis_client
        running = await start_server(await build(settings, store, metrics))
        address = f"127.0.0.1:{running.port}"
        try:
            async with open_channel(address) as channel:
                yield Registry(
                    client=RegistryClient(channel, chunk_bytes=chunk_bytes),
                    stub=pb_grpc.RegistryServiceStub(channel),
                    settings=settings,
                    redis=store,
                    address=address,
                )
        finally:
            await running.stop(0)

    return start


@pytest.fixture
async def registry(start_registry: StartRegistry) -> AsyncIterator[Registry]:
    async with start_registry() as running:
        yield running


def model(seed: int, rows: int = 32) -> dict[str, torch.Tensor]:
    """A small model whose values depend on ``seed`` (``rows`` × 64 float32 plus a bias)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "layer.weight": torch.randn(rows, 64, generator=generator),
        "layer.bias": torch.randn(64, generator=generator),
    }


@pytest.fixture
def make_model() -> Callable[..., dict[str, torch.Tensor]]:
    return model


class AlertSink:
    """The Emit method of the alerting contract, recording what arrives."""

    def __init__(self) -> None:
        self.events: list[alerting_pb2.Event] = []

    async def emit(
        self, request: alerting_pb2.EmitRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> alerting_pb2.EmitResponse:
        self.events.append(request.event)
        return alerting_pb2.EmitResponse(
            fingerprint=f"fp{len(self.events)}", state=alerting_pb2.ALERT_STATE_FIRING
        )


@pytest.fixture
async def alert_sink() -> AsyncIterator[tuple[AlertSink, str]]:
    sink = AlertSink()
    name = alerting_pb2.DESCRIPTOR.services_by_name["AlertingService"].full_name
    handler = grpc.method_handlers_generic_handler(
        name,
        {
            "Emit": grpc.unary_unary_rpc_method_handler(
                sink.emit,
                request_deserializer=alerting_pb2.EmitRequest.FromString,
                response_serializer=alerting_pb2.EmitResponse.SerializeToString,
            )
        },
    )

    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((handler,))

    running = await start_server([ServiceBinding(name, register)])
    yield sink, f"127.0.0.1:{running.port}"
    await running.stop(0)
