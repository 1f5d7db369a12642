"""A real registry and a real aggregator on port 0 over the real Redis, with a base model."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
import torch

from fedmesh.client.aggregator import AggregatorClient
from fedmesh.client.registry import RegistryClient
from fedmesh.client.signing import NodeSigner
from fedmesh.config import CommonSettings
from fedmesh.proto.aggregator.v1 import aggregator_pb2_grpc as pb_grpc
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.rpc import RunningServer, open_channel, start_server
from fedmesh.services.aggregator.central_privacy import CentralPrivacy
from fedmesh.services.aggregator.metrics import AggregatorMetrics
from fedmesh.services.aggregator.server import build
from fedmesh.services.aggregator.settings import AggregatorSettings
from fedmesh.services.registry.server import build as build_registry
from fedmesh.services.registry.settings import RegistrySettings
from fedmesh.store import Phase, RoundStore
from fedmesh.store.fencing import next_token

RUN = "run-1"
MODEL = "detector"
_SIGNERS: dict[str, NodeSigner] = {}


def signer_of(node_id: str) -> NodeSigner:
    """The node's signing key, the same for the whole test session."""
    if node_id not in _SIGNERS:
        _SIGNERS[node_id] = NodeSigner.generate()
    return _SIGNERS[node_id]


def signing_keys(nodes: Sequence[str]) -> str:
    """The round-record field the coordinator writes: node id → hex public key."""
    return json.dumps({node: signer_of(node).public_key.hex() for node in nodes})


def base_model() -> dict[str, torch.Tensor]:
    """The round's base model: two float32 tensors."""
    generator = torch.Generator().manual_seed(11)
    return {
        "layer.weight": torch.randn(16, 8, generator=generator),
        "layer.bias": torch.randn(8, generator=generator),
    }


@dataclass
class Aggregation:
    """A running aggregator and registry, the test Redis, and the published base model."""

    client: AggregatorClient
    channel: grpc.aio.Channel
    stub: pb_grpc.AggregatorServiceAsyncStub
    registry: RegistryClient
    rounds: RoundStore
    redis: aioredis.Redis
    settings: AggregatorSettings
    metrics: AggregatorMetrics
    server: RunningServer
    base: dict[str, torch.Tensor]
    base_ref: common.ModelRef

    async def open_round(
        self,
        round_no: int = 1,
        participants: Sequence[str] = ("n1", "n2", "n3"),
        base_ref: common.ModelRef | None = None,
    ) -> None:
        """Create a round in COLLECTING with its participants' keys, as the coordinator does."""
        ref = base_ref if base_ref is not None else self.base_ref
        base = {"name": ref.name, "version": ref.version, "digest": ref.digest}
        fields = {"base_model": json.dumps(base), "signing_keys": signing_keys(participants)}
        await self.rounds.create(RUN, round_no, participants, 10**13, 1, fields)
        await self.rounds.transition(RUN, round_no, Phase.PENDING, Phase.COLLECTING)

    async def close_collection(self, round_no: int = 1) -> None:
        """Move the round to AGGREGATING, as the coordinator does at quorum."""
        await self.rounds.transition(RUN, round_no, Phase.COLLECTING, Phase.AGGREGATING)

    def delta(self, seed: int, scale: float = 0.01) -> dict[str, torch.Tensor]:
        """A random delta with the base model's manifest."""
        generator = torch.Generator().manual_seed(seed)
        return {
            name: torch.randn(t.shape, generator=generator) * scale for name, t in self.base.items()
        }

    def spool_files(self) -> list[Path]:
        """Every file in the spool directory."""
        return sorted(p for p in self.settings.spool_dir.rglob("*") if p.is_file())


StartAggregator = Callable[..., contextlib.AbstractAsyncContextManager[Aggregation]]


@pytest.fixture
def registry_settings(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> RegistrySettings:
    monkeypatch.setenv("FEDMESH_REGISTRY_DATA_DIR", str(tmp_path / "registry"))
    monkeypatch.setenv("FEDMESH_REDIS_URL", redis_url)
    monkeypatch.delenv("FEDMESH_ALERTING_ADDRESS", raising=False)
    return RegistrySettings.from_env()


@pytest.fixture
async def registry_address(
    registry_settings: RegistrySettings, redis_client: aioredis.Redis
) -> AsyncIterator[str]:
    running = await start_server(await build_registry(registry_settings, redis_client))
    yield f"127.0.0.1:{running.port}"
    await running.stop(0)


@pytest.fixture
def aggregator_settings(
    tmp_path: Path, redis_url: str, registry_address: str
) -> AggregatorSettings:
    common_settings = CommonSettings(
        listen="127.0.0.1:0",
        redis_url=redis_url,
        coordinator_address="127.0.0.1:1",
        aggregator_address="127.0.0.1:1",
        registry_address=registry_address,
        alerting_address="127.0.0.1:1",
        tls=None,
        metrics_port=0,
    )
    return AggregatorSettings(
        common=common_settings,
        spool_dir=tmp_path / "spool",
        memory_threshold_bytes=256,
        max_update_bytes=1 << 20,
        device=torch.device("cpu"),
        block_coordinates=40,
    )


@pytest.fixture
def start_aggregator(
    aggregator_settings: AggregatorSettings, redis_client: aioredis.Redis
) -> StartAggregator:
    """Start an aggregator with the test settings, changed by keyword (``max_update_bytes=…``)."""
    published: dict[str, common.ModelRef] = {}

    @contextlib.asynccontextmanager
    async def start(
        privacy: CentralPrivacy | None = None, **changes: Any
    ) -> AsyncIterator[Aggregation]:
        settings = dataclasses.replace(aggregator_settings, **changes)
        registry_channel = open_channel(settings.common.registry_address)
        registry = RegistryClient(registry_channel)
        base = base_model()
        if "base" not in published:
            await next_token(redis_client)
            version = await registry.publish_tensors(MODEL, base)
            published["base"] = version.ref
        metrics = AggregatorMetrics()
        # No readiness probe here: RunningServer.stop can miss the probe's cancellation
        # on Python 3.11 (asyncio.wait_for); `readiness` is tested on its own.
        running = await start_server(
            await build(settings, redis_client, registry, metrics, privacy=privacy)
        )
        try:
            async with open_channel(f"127.0.0.1:{running.port}") as channel:
                yield Aggregation(
                    client=AggregatorClient(channel, initial_backoff=0.05),
                    channel=channel,
                    stub=pb_grpc.AggregatorServiceStub(channel),
                    registry=registry,
                    rounds=RoundStore(redis_client),
                    redis=redis_client,
                    settings=settings,
                    metrics=metrics,
                    server=running,
                    base=base,
                    base_ref=published["base"],
                )
        finally:
            await running.stop(0)
            await registry_channel.close()

    return start


@pytest.fixture
async def aggregation(start_aggregator: StartAggregator) -> AsyncIterator[Aggregation]:
    async with start_aggregator() as running:
        yield running
