"""Publishers racing on one model: every publish gets its own number, no gaps, one chain."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import torch

from fedmesh.client.registry import Provenance, RegistryClient
from fedmesh.rpc import open_channel
from fedmesh.store.fencing import next_token

PER_PUBLISHER = 8


async def test_two_publishers_get_distinct_gapless_versions_on_one_chain(
    registry: Any, make_model: Callable[..., dict[str, torch.Tensor]]
) -> None:
    async def publisher(offset: int) -> list[int]:
        async with open_channel(registry.address) as channel:
            client = RegistryClient(channel, chunk_bytes=4096)
            numbers = []
            for i in range(PER_PUBLISHER):
                version = await client.publish_tensors("detector", make_model(offset + i))
                numbers.append(version.ref.version)
            return numbers

    first, second = await asyncio.gather(publisher(0), publisher(100))
    page = await registry.client.list_versions("detector", page_size=100)
    chain = await registry.client.verify_chain("detector")

    assert sorted(first + second) == list(range(1, 2 * PER_PUBLISHER + 1))
    assert first == sorted(first)
    assert second == sorted(second)
    newest_first = page.versions
    assert [v.ref.version for v in newest_first] == list(range(2 * PER_PUBLISHER, 0, -1))
    for later, earlier in itertools.pairwise(newest_first):
        assert later.previous_digest == earlier.record_digest
    assert chain.versions_checked == 2 * PER_PUBLISHER


async def test_concurrent_retries_of_one_round_make_one_version(
    registry: Any, make_model: Callable[..., dict[str, torch.Tensor]]
) -> None:
    token = await next_token(registry.redis)
    tensors = make_model(1)
    run = Provenance(run_id="run-1", round=1)

    versions = await asyncio.gather(
        *(
            registry.client.publish_tensors(
                "detector", tensors, provenance=run, fencing_token=token
            )
            for _ in range(4)
        )
    )

    assert {v.ref.version for v in versions} == {1}
    assert {v.record_digest for v in versions} == {versions[0].record_digest}
    listed = (await registry.client.list_versions("detector")).versions
    assert [v.ref.version for v in listed] == [1]
    assert len(registry.blob_files()) == 1
