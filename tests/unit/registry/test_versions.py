"""VersionStore over a real Redis: atomic appends, idempotent publications, blob references."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json

import redis.asyncio as aioredis

from fedmesh.services.registry import keys
from fedmesh.services.registry.records import SignedRecord
from fedmesh.services.registry.versions import RecordBuilder, VersionStore, publication_key


def builder(label: str, calls: list[tuple[int, str]]) -> RecordBuilder:
    def build(version: int, previous_digest: str) -> SignedRecord:
        calls.append((version, previous_digest))
        body = json.dumps({"label": label, "version": version, "previous": previous_digest})
        canonical = body.encode()
        return SignedRecord(canonical, hashlib.sha256(canonical).hexdigest(), b"sig")

    return build


def digest_of(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


async def test_appends_number_versions_and_link_each_to_the_previous(
    redis_client: aioredis.Redis,
) -> None:
    store = VersionStore(redis_client)
    calls: list[tuple[int, str]] = []

    first = await store.append("m", builder("a", calls), digest_of("a"), None)
    second = await store.append("m", builder("b", calls), digest_of("b"), None)
    head = await store.head("m")

    first_record = (await store.get_many("m", [1]))[0]
    assert first_record is not None
    assert (first.version, first.duplicate, second.version) == (1, False, 2)
    assert calls == [(1, ""), (2, first_record.signed.record_digest)]
    assert head[0] == 2


async def test_racing_appends_each_get_their_own_number(redis_client: aioredis.Redis) -> None:
    store = VersionStore(redis_client)
    calls: list[tuple[int, str]] = []

    results = await asyncio.gather(
        *(store.append("m", builder(str(i), calls), digest_of(str(i)), None) for i in range(20))
    )
    stored = await store.get_many("m", list(range(1, 21)))

    assert sorted(r.version for r in results) == list(range(1, 21))
    records = [json.loads(s.signed.canonical) for s in stored if s is not None]
    assert [r["version"] for r in records] == list(range(1, 21))
    for earlier, later in itertools.pairwise(stored):
        assert earlier is not None
        assert later is not None
        assert json.loads(later.signed.canonical)["previous"] == earlier.signed.record_digest


async def test_a_publication_is_appended_once(redis_client: aioredis.Redis) -> None:
    store = VersionStore(redis_client)
    calls: list[tuple[int, str]] = []
    key = publication_key("run-1", 3)
    await store.add_model("m")

    first = await store.append("m", builder("a", calls), digest_of("a"), key)
    again = await store.append("m", builder("a", calls), digest_of("a"), key)

    assert (first.version, first.duplicate) == (1, False)
    assert (again.version, again.duplicate) == (1, True)
    assert await store.publication("m", "run-1", 3) == 1
    assert (await store.head("m"))[0] == 1
    assert await store.blob_references(digest_of("a")) == 1


async def test_dropping_a_blob_respects_aliases_and_counts_references(
    redis_client: aioredis.Redis,
) -> None:
    store = VersionStore(redis_client)
    calls: list[tuple[int, str]] = []
    shared = digest_of("shared")
    for name in ("m", "m", "other"):
        await store.add_model(name)
        await store.append(name, builder(name, calls), shared, None)
    await redis_client.hset(keys.aliases_key("m"), "production", "2")

    aliased = await store.drop_blob("m", 2, shared)
    dropped = await store.drop_blob("m", 1, shared)
    already = await store.drop_blob("m", 1, shared)

    assert (aliased, dropped, already) == ("aliased", "dropped", "already")
    assert await store.dropped("m") == {1}
    assert await store.blob_references(shared) == 2
    assert await store.referenced_blobs() == {shared}
    assert await store.model_names() == ["m", "other"]
