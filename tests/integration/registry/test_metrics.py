"""The registry's Prometheus metrics follow what it does."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import torch

from fedmesh.client.registry import Provenance
from fedmesh.errors import DataLoss, InvalidArgument
from fedmesh.services.registry import keys
from fedmesh.services.registry.metrics import RegistryMetrics
from fedmesh.store.fencing import next_token
from fedmesh.tensors import encode

ModelFactory = Callable[..., dict[str, torch.Tensor]]


async def test_publishes_bytes_moves_drops_and_tampering_are_counted(
    start_registry: Any, make_model: ModelFactory
) -> None:
    metrics = RegistryMetrics()
    first, second = make_model(1), make_model(2)
    async with start_registry(metrics=metrics, keep_versions=1) as registry:
        client = registry.client
        token = await next_token(registry.redis)
        run = Provenance(run_id="run-1", round=1)
        await client.publish_tensors("detector", first)
        await client.publish_tensors("detector", second, provenance=run, fencing_token=token)
        await client.publish_tensors("detector", second, provenance=run, fencing_token=token)
        with pytest.raises(InvalidArgument):
            await client.publish_tensors("Bad Name", first)
        await client.download("detector", 2)
        await client.promote("detector", 2, alias="candidate")
        key = keys.records_key("detector")
        stored = json.loads(await registry.redis.hget(key, "2"))
        stored["record"] = stored["record"].replace('"round":1', '"round":5')
        await registry.redis.hset(key, "2", json.dumps(stored))
        with pytest.raises(DataLoss):
            await client.verify_chain("detector")

    payload = len(encode(second))
    assert metrics.value("fedmesh_registry_publishes_total", outcome="published") == 2
    assert metrics.value("fedmesh_registry_publishes_total", outcome="duplicate") == 1
    assert metrics.value("fedmesh_registry_publishes_total", outcome="refused") == 1
    assert metrics.value("fedmesh_registry_publish_seconds_count") == 2
    assert metrics.value("fedmesh_registry_bytes_total", direction="in") == 2 * payload
    assert metrics.value("fedmesh_registry_bytes_total", direction="out") == payload
    assert (
        metrics.value("fedmesh_registry_alias_moves_total", alias="candidate", action="promote")
        == 1
    )
    assert metrics.value("fedmesh_registry_blobs_dropped_total") == 1
    assert metrics.value("fedmesh_registry_tampering_total", model="detector") == 1
