"""A restarted Redis (from its AOF) and registry (same blob dir and key) keep everything."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fedmesh.proto.common.v1 import common_pb2
from fedmesh.store import EmbeddedRedis, connect
from fedmesh.tensors import encode

ModelFactory = Callable[..., dict[str, torch.Tensor]]


async def test_restart_keeps_versions_aliases_evaluations_history_and_blobs(
    start_registry: Any, make_model: ModelFactory, tmp_path: Path
) -> None:
    redis_server = EmbeddedRedis(tmp_path / "redis").start()
    port = redis_server.port
    redis = connect(redis_server.url)
    try:
        async with start_registry(redis=redis) as registry:
            first = await registry.client.publish_tensors("detector", make_model(1))
            await registry.client.publish_tensors("detector", make_model(2), parent_version=1)
            await registry.client.record_evaluation(
                "detector",
                1,
                common_pb2.EvaluationMetrics(
                    loss=0.2, macro_f1=0.81, pr_auc=0.7, samples=10, reporters=2
                ),
            )
            await registry.client.promote("detector", 1, reason="baseline")
            before = (await registry.client.list_versions("detector")).versions
            key_id = (await registry.client.status()).signing_key_id
        await redis.aclose()
        redis_server.stop()

        redis_server = EmbeddedRedis(tmp_path / "redis", port=port).start()
        redis = connect(redis_server.url)
        async with start_registry(redis=redis) as registry:
            after = (await registry.client.list_versions("detector")).versions
            chain = await registry.client.verify_chain("detector")
            payload = await registry.client.download("detector", alias="production")
            moves = await registry.client.alias_moves("detector")
            status = await registry.client.status()
    finally:
        await redis.aclose()
        redis_server.stop()

    assert after == before
    assert after[1].evaluation.macro_f1 == 0.81
    assert list(after[1].aliases) == ["production"]
    assert (chain.versions_checked, chain.blobs_checked) == (2, 2)
    assert payload == encode(make_model(1))
    assert [(m.to_version, m.reason) for m in moves] == [(1, "baseline")]
    assert status.signing_key_id == key_id
    assert first.ref.digest in {p.name for p in (tmp_path / "registry" / "blobs").rglob("*")}
