"""Fixtures for the aggregator's domain modules: a base model, an open round, a spool."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import torch

from fedmesh.client.signing import NodeSigner
from fedmesh.errors import NotFound
from fedmesh.services.aggregator.base_model import BaseManifests, PublishedModel
from fedmesh.services.aggregator.metrics import AggregatorMetrics
from fedmesh.services.aggregator.nonces import UsedNonces
from fedmesh.services.aggregator.spool import UpdateSpool
from fedmesh.services.aggregator.submission import UpdateIntake
from fedmesh.services.aggregator.update import ModelRef, UpdateHeader
from fedmesh.store import Phase, RoundStore
from fedmesh.tensors import digest_tensors, encode, manifest_of

RUN = "run-1"
ROUND = 3
PARTICIPANTS = ("n1", "n2", "n3")
SIGNERS = {node: NodeSigner.generate() for node in (*PARTICIPANTS, "intruder")}
"""Each node's signing key; the round records those of the participants."""


def signing_keys_field(nodes: tuple[str, ...] = PARTICIPANTS) -> str:
    """The round-record field the coordinator writes: node id → hex public key."""
    return json.dumps({node: SIGNERS[node].public_key.hex() for node in nodes})


class Catalog:
    """The registry's answer about base models, counting how often it is asked."""

    def __init__(self, models: dict[str, torch.Tensor], ref: ModelRef) -> None:
        self.published = {(ref.name, ref.version): PublishedModel(ref, manifest_of(models))}
        self.calls = 0

    async def describe(self, name: str, version: int) -> PublishedModel:
        self.calls += 1
        try:
            return self.published[(name, version)]
        except KeyError:
            raise NotFound(f"model {name} v{version} does not exist") from None


@pytest.fixture
def base_model() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return {
        "conv.weight": torch.randn(6, 4, generator=generator),
        "conv.bias": torch.randn(6, generator=generator),
        "head.weight": torch.randn(1, 6, generator=generator),
    }


@pytest.fixture
def base_ref(base_model: dict[str, torch.Tensor]) -> ModelRef:
    return ModelRef("detector", 4, digest_tensors(base_model))


@pytest.fixture
def delta(base_model: dict[str, torch.Tensor]) -> Callable[[int], dict[str, torch.Tensor]]:
    """Seed → a small random delta with the base model's manifest."""

    def make(seed: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        return {
            name: torch.randn(t.shape, generator=generator) * 0.01 for name, t in base_model.items()
        }

    return make


@pytest.fixture
def header_for(base_ref: ModelRef) -> Callable[..., UpdateHeader]:
    """(tensors, node="n1", **field changes) → the header a node would send, signed.

    The node's signature covers the fields after the changes, unless ``nonce`` or
    ``signature`` is among them.
    """

    def make(tensors: dict[str, torch.Tensor], node: str = "n1", **changes: Any) -> UpdateHeader:
        fields: dict[str, Any] = {
            "run_id": RUN,
            "round_no": ROUND,
            "node_id": node,
            "manifest": manifest_of(tensors),
            "digest": digest_tensors(tensors),
            "num_samples": 40,
            "payload_bytes": len(encode(tensors)),
            "base_model": base_ref,
            "local_loss": 0.25,
        }
        fields.update(changes)
        if fields["round_no"] >= 0:
            signed = SIGNERS[node].sign_update(
                fields["run_id"], fields["round_no"], node, fields["digest"]
            )
            fields.setdefault("nonce", signed.nonce)
            fields.setdefault("signature", signed.signature)
        else:  # no round to sign: refused before any signature is checked
            fields.setdefault("nonce", bytes(16))
            fields.setdefault("signature", bytes(64))
        return UpdateHeader(**fields)

    return make


@pytest.fixture
def chunks_of() -> Callable[..., AsyncIterator[bytes]]:
    """(payload, size=16) → the payload as an async stream of chunks."""

    async def stream(payload: bytes, size: int = 16) -> AsyncIterator[bytes]:
        for start in range(0, len(payload), size):
            yield payload[start : start + size]

    return stream


@pytest.fixture
def catalog(base_model: dict[str, torch.Tensor], base_ref: ModelRef) -> Catalog:
    return Catalog(base_model, base_ref)


@pytest.fixture
async def rounds(redis_client: aioredis.Redis, base_ref: ModelRef) -> RoundStore:
    store = RoundStore(redis_client)
    await store.create(
        RUN,
        ROUND,
        PARTICIPANTS,
        deadline_unix_ms=10**13,
        opened_unix_ms=1,
        fields={"base_model": json.dumps(base_ref.__dict__), "signing_keys": signing_keys_field()},
    )
    await store.transition(RUN, ROUND, Phase.PENDING, Phase.COLLECTING)
    return store


@pytest.fixture
def spool(tmp_path: Path) -> UpdateSpool:
    return UpdateSpool(tmp_path / "spool", memory_threshold_bytes=64)


@pytest.fixture
def metrics() -> AggregatorMetrics:
    return AggregatorMetrics()


@pytest.fixture
def intake(
    rounds: RoundStore,
    spool: UpdateSpool,
    catalog: Catalog,
    metrics: AggregatorMetrics,
    redis_client: aioredis.Redis,
) -> UpdateIntake:
    return UpdateIntake(
        rounds,
        spool,
        BaseManifests(catalog),
        metrics,
        max_update_bytes=1 << 20,
        nonces=UsedNonces(redis_client),
    )
