"""Retention keeps the last N versions and the aliased ones; records stay, the chain verifies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from fedmesh.errors import FailedPrecondition, NotFound

ModelFactory = Callable[..., dict[str, torch.Tensor]]


async def test_old_unaliased_blobs_go_and_the_chain_still_verifies(
    start_registry: Any, make_model: ModelFactory
) -> None:
    async with start_registry(keep_versions=2) as registry:
        client = registry.client
        versions = [await client.publish_tensors("detector", make_model(1))]
        await client.promote("detector", 1, alias="candidate")
        for seed in (2, 3, 4, 5):
            versions.append(
                await client.publish_tensors("detector", make_model(seed), parent_version=seed - 1)
            )

        listed = (await client.list_versions("detector")).versions
        chain = await client.verify_chain("detector")
        lineage = await client.lineage("detector", 5)
        with pytest.raises(NotFound) as download:
            await client.download("detector", 2)
        with pytest.raises(FailedPrecondition) as promote:
            await client.promote("detector", 3, alias="candidate")

        kept = {versions[i].ref.digest for i in (0, 3, 4)}
        assert {v.ref.version: v.blob_deleted for v in listed} == {
            5: False,
            4: False,
            3: True,
            2: True,
            1: False,
        }
        assert {p.name for p in registry.blob_files()} == kept
        assert (chain.versions_checked, chain.blobs_checked) == (5, 3)
        assert [v.ref.version for v in lineage] == [5, 4, 3, 2, 1]
        assert str(download.value) == (
            "blob of version 2 of model 'detector' was deleted by retention; its record remains"
        )
        assert str(promote.value) == (
            "version 3 of model 'detector' cannot take alias 'candidate': retention deleted "
            "its blob"
        )


async def test_a_version_leaving_its_alias_falls_to_retention(
    start_registry: Any, make_model: ModelFactory
) -> None:
    async with start_registry(keep_versions=1) as registry:
        client = registry.client
        await client.publish_tensors("detector", make_model(1))
        await client.promote("detector", 1, alias="candidate")
        await client.publish_tensors("detector", make_model(2))

        before = (await client.get_version("detector", 1)).blob_deleted
        await client.promote("detector", 2, alias="candidate")
        after = (await client.get_version("detector", 1)).blob_deleted

        assert (before, after) == (False, True)
        assert (await client.verify_chain("detector")).versions_checked == 2


async def test_a_blob_shared_with_a_kept_version_stays(
    start_registry: Any, make_model: ModelFactory
) -> None:
    async with start_registry(keep_versions=1) as registry:
        client = registry.client
        same = make_model(1)
        first = await client.publish_tensors("detector", same)
        await client.publish_tensors("detector", make_model(2))
        third = await client.publish_tensors("detector", same)

        dropped = [(await client.get_version("detector", v)).blob_deleted for v in (1, 2, 3)]

        assert first.ref.digest == third.ref.digest
        assert dropped == [True, True, False]
        assert [p.name for p in registry.blob_files()] == [third.ref.digest]
        assert await client.download("detector", 3) == await client.download("detector")


async def test_keep_zero_keeps_every_version(start_registry: Any, make_model: ModelFactory) -> None:
    async with start_registry(keep_versions=0) as registry:
        for seed in range(4):
            await registry.client.publish_tensors("detector", make_model(seed))

        listed = (await registry.client.list_versions("detector")).versions

        assert [v.blob_deleted for v in listed] == [False] * 4
        assert len(registry.blob_files()) == 4
