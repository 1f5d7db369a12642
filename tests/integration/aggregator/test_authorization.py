"""Aggregator authorization under mTLS: nodes upload as themselves, the coordinator aggregates."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
import torch

from fedmesh.client.aggregator import AggregatorClient
from fedmesh.client.registry import RegistryClient
from fedmesh.client.signing import SIGNING_KEYS_FIELD, NodeSigner
from fedmesh.proto.aggregator.v1 import aggregator_pb2 as pb
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.rpc import open_channel, start_server
from fedmesh.rpc.certs import DevCertificateAuthority
from fedmesh.services.aggregator.server import build
from fedmesh.services.aggregator.settings import AggregatorSettings
from fedmesh.store import Phase, RoundStore
from fedmesh.store.fencing import current_token, next_token
from fedmesh.tensors import digest_tensors

from .conftest import MODEL, RUN, base_model

N1 = "spiffe://fedmesh.local/node/n1"
COORDINATOR = "spiffe://fedmesh.local/service/coordinator"
FEDAVG = common.AggregationSpec(rule=common.AGGREGATION_RULE_FEDAVG)
SIGNER = NodeSigner.generate()


@dataclasses.dataclass
class Callers:
    """Clients of one mTLS aggregator, each with its own certificate, and its round."""

    node: AggregatorClient
    coordinator: AggregatorClient
    admin: AggregatorClient
    base_ref: common.ModelRef
    spool_dir: Path


@pytest.fixture
async def callers(
    tmp_path: Path,
    aggregator_settings: AggregatorSettings,
    registry_address: str,
    redis_client: aioredis.Redis,
) -> AsyncIterator[Callers]:
    """An aggregator over mTLS with round 1 of RUN collecting from n1, and three callers."""
    authority = DevCertificateAuthority.create(tmp_path / "certs")
    server_tls = authority.issue("service", "aggregator")
    settings = dataclasses.replace(
        aggregator_settings, common=dataclasses.replace(aggregator_settings.common, tls=server_tls)
    )
    async with open_channel(registry_address) as registry_channel:
        registry = RegistryClient(registry_channel)
        base = (await registry.publish_tensors(MODEL, base_model())).ref
        await next_token(redis_client)
        rounds = RoundStore(redis_client)
        fields = {
            "base_model": json.dumps(dict(name=base.name, version=1, digest=base.digest)),
            SIGNING_KEYS_FIELD: json.dumps({"n1": SIGNER.public_key.hex()}),
        }
        await rounds.create(RUN, 1, ["n1"], 10**13, 1, fields)
        await rounds.transition(RUN, 1, Phase.PENDING, Phase.COLLECTING)
        running = await start_server(await build(settings, redis_client, registry), tls=server_tls)
        address = f"localhost:{running.port}"
        try:
            async with (
                open_channel(address, tls=authority.issue("node", "n1")) as node,
                open_channel(address, tls=authority.issue("service", "coordinator")) as service,
                open_channel(address, tls=authority.issue("admin", "alice")) as admin,
            ):
                yield Callers(
                    AggregatorClient(node, attempts=1),
                    AggregatorClient(service, attempts=1),
                    AggregatorClient(admin, attempts=1),
                    base,
                    settings.spool_dir,
                )
        finally:
            await running.stop(0)


def spooled(spool_dir: Path) -> list[Path]:
    """Every file in the spool."""
    return sorted(p for p in spool_dir.rglob("*") if p.is_file())


async def state(
    redis: aioredis.Redis, spool_dir: Path
) -> tuple[dict[str, bytes | None], list[Path]]:
    """Every Redis key's serialized value and every spooled file."""
    values = {str(key): await redis.dump(key) for key in sorted(await redis.keys("*"))}
    return values, await asyncio.to_thread(spooled, spool_dir)


async def refused(
    redis: aioredis.Redis, spool_dir: Path, call: Callable[[], Awaitable[object]]
) -> tuple[grpc.StatusCode, str | None]:
    """The status and message ``call`` fails with, after checking nothing was stored."""
    before = await state(redis, spool_dir)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call()
    assert await state(redis, spool_dir) == before, "a refused call changed the stored state"
    return info.value.code(), info.value.details()


def upload(
    client: AggregatorClient, node_id: str, base_ref: common.ModelRef
) -> Awaitable[pb.SubmitUpdateResponse]:
    """A small delta for round 1 of RUN sent under ``node_id``, signed by n1's key."""
    tensors = {name: torch.full_like(t, 0.01) for name, t in base_model().items()}
    signed = SIGNER.sign_update(RUN, 1, node_id, digest_tensors(tensors))
    return client.submit_tensors(
        run_id=RUN,
        round_no=1,
        node_id=node_id,
        base_model=base_ref,
        tensors=tensors,
        num_samples=10,
        local_loss=0.5,
        nonce=signed.nonce,
        signature=signed.signature,
    )


async def aggregate(
    client: AggregatorClient, redis: aioredis.Redis, base_ref: common.ModelRef
) -> pb.AggregateRoundResponse:
    """AggregateRound for round 1 of RUN with the current fencing token."""
    return await client.aggregate_round(
        run_id=RUN,
        round_no=1,
        fencing_token=await current_token(redis),
        aggregation=FEDAVG,
        base_model=base_ref,
    )


async def test_a_node_uploads_only_as_itself(
    callers: Callers, redis_client: aioredis.Redis
) -> None:
    as_other = await refused(
        redis_client, callers.spool_dir, lambda: upload(callers.node, "n2", callers.base_ref)
    )
    as_node = await refused(
        redis_client,
        callers.spool_dir,
        lambda: upload(callers.coordinator, "n1", callers.base_ref),
    )
    own = await upload(callers.node, "n1", callers.base_ref)
    status = await callers.node.status()

    assert as_other == (
        grpc.StatusCode.PERMISSION_DENIED,
        f"caller {N1} may not act as spiffe://fedmesh.local/node/n2",
    )
    assert as_node == (
        grpc.StatusCode.PERMISSION_DENIED,
        f"caller {COORDINATOR} may not act as {N1}",
    )
    assert not own.duplicate
    assert (status.spooled_updates, status.updates_rejected) == (1, 2)


async def test_only_the_coordinator_aggregates(
    callers: Callers, redis_client: aioredis.Redis
) -> None:
    await upload(callers.node, "n1", callers.base_ref)
    await RoundStore(redis_client).transition(RUN, 1, Phase.COLLECTING, Phase.AGGREGATING)

    by_node = await refused(
        redis_client,
        callers.spool_dir,
        lambda: aggregate(callers.node, redis_client, callers.base_ref),
    )
    by_admin = await refused(
        redis_client,
        callers.spool_dir,
        lambda: aggregate(callers.admin, redis_client, callers.base_ref),
    )
    result = await aggregate(callers.coordinator, redis_client, callers.base_ref)

    expected = f"AggregateRound is for {COORDINATOR}; the caller is {{}}"
    assert by_node == (grpc.StatusCode.PERMISSION_DENIED, expected.format(N1))
    assert by_admin == (
        grpc.StatusCode.PERMISSION_DENIED,
        expected.format("spiffe://fedmesh.local/admin/alice"),
    )
    assert (result.model.name, result.model.version) == (MODEL, 2)
