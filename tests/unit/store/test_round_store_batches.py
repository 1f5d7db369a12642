"""Receipts recorded all or none, and fields noted once while a round is open."""

import pytest
import redis.asyncio as aioredis

from fedmesh.errors import AlreadyExists, FailedPrecondition, NotFound
from fedmesh.store import Phase, Receipt, RoundStore


def receipt(node: str, digest: str = "d1") -> Receipt:
    return Receipt(
        node, digest, num_samples=3, payload_bytes=40, local_loss=0.5, received_unix_ms=1
    )


async def collecting(store: RoundStore) -> None:
    await store.create("run1", 1, ("a", "b", "c"), deadline_unix_ms=5_000, opened_unix_ms=1_000)
    await store.transition("run1", 1, Phase.PENDING, Phase.COLLECTING)


async def test_a_batch_of_receipts_is_recorded_at_once(redis_client: aioredis.Redis) -> None:
    store = RoundStore(redis_client)
    await collecting(store)

    await store.record_receipts("run1", 1, [receipt("a"), receipt("b")])
    await store.record_receipts("run1", 1, [receipt("a"), receipt("b")])  # a retry changes nothing

    assert sorted((await store.get("run1", 1)).receipts) == ["a", "b"]


async def test_one_unselected_node_refuses_the_whole_batch(redis_client: aioredis.Redis) -> None:
    store = RoundStore(redis_client)
    await collecting(store)

    with pytest.raises(FailedPrecondition, match="node 'z' was not selected for round 1"):
        await store.record_receipts("run1", 1, [receipt("a"), receipt("z")])

    assert (await store.get("run1", 1)).receipts == {}


async def test_a_conflicting_digest_refuses_the_whole_batch(redis_client: aioredis.Redis) -> None:
    store = RoundStore(redis_client)
    await collecting(store)
    await store.record_receipt("run1", 1, receipt("b", "old"))

    with pytest.raises(AlreadyExists, match="node 'b' already submitted update old"):
        await store.record_receipts("run1", 1, [receipt("a", "new"), receipt("b", "new")])

    assert sorted((await store.get("run1", 1)).receipts) == ["b"]


async def test_a_batch_is_refused_once_the_round_stops_collecting(
    redis_client: aioredis.Redis,
) -> None:
    store = RoundStore(redis_client)
    await collecting(store)
    await store.transition("run1", 1, Phase.COLLECTING, Phase.AGGREGATING)

    with pytest.raises(FailedPrecondition, match="round 1 of run run1 is AGGREGATING"):
        await store.record_receipts("run1", 1, [receipt("a")])


async def test_a_noted_field_keeps_its_first_value(redis_client: aioredis.Redis) -> None:
    store = RoundStore(redis_client)
    await collecting(store)

    assert await store.note_once("run1", 1, "secure_session", "first") == "first"
    assert await store.note_once("run1", 1, "secure_session", "second") == "first"
    assert (await store.get("run1", 1)).fields["secure_session"] == "first"


async def test_no_field_is_noted_on_a_closed_or_missing_round(
    redis_client: aioredis.Redis,
) -> None:
    store = RoundStore(redis_client)
    await collecting(store)
    await store.transition("run1", 1, Phase.COLLECTING, Phase.FAILED)

    with pytest.raises(FailedPrecondition, match="round 1 of run run1 is FAILED, no longer open"):
        await store.note_once("run1", 1, "secure_abort_reason", "late")
    with pytest.raises(NotFound, match="round 9 of run run1 does not exist"):
        await store.note_once("run1", 9, "secure_abort_reason", "late")
    assert "secure_abort_reason" not in (await store.get("run1", 1)).fields
