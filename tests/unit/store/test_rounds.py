import asyncio

import pytest
import redis.asyncio as aioredis

from fedmesh.errors import Aborted, AlreadyExists, FailedPrecondition, NotFound
from fedmesh.store import Phase, Receipt, ReceiptOutcome, RoundStore


def receipt(node: str, digest: str = "d1") -> Receipt:
    return Receipt(
        node, digest, num_samples=10, payload_bytes=100, local_loss=0.5, received_unix_ms=1
    )


async def collecting(store: RoundStore, participants: tuple[str, ...] = ("a", "b")) -> None:
    await store.create("run1", 1, participants, deadline_unix_ms=5_000, opened_unix_ms=1_000)
    await store.transition("run1", 1, Phase.PENDING, Phase.COLLECTING)


async def test_create_stores_round_in_pending(redis_client: aioredis.Redis) -> None:
    store = RoundStore(redis_client)
    await store.create("run1", 1, ["a", "b"], 5_000, 1_000, {"base_digest": "abc"})

    record = await store.get("run1", 1)

    assert record.phase is Phase.PENDING
    assert record.participants == frozenset({"a", "b"})
    assert record.deadline_unix_ms == 5_000
    assert record.fields["base_digest"] == "abc"
    assert await store.due(4_999) == []
    assert await store.due(5_000) == [("run1", 1)]


async def test_create_twice_is_refused(redis_client: aioredis.Redis) -> None:
    store = RoundStore(redis_client)
    await store.create("run1", 1, ["a"], 5_000, 1_000)

    with pytest.raises(AlreadyExists, match="round 1 of run run1 already exists"):
        await store.create("run1", 1, ["b"], 9_000, 1_000)
    assert (await store.get("run1", 1)).participants == frozenset({"a"})


async def test_transition_from_wrong_phase_is_aborted_and_changes_nothing(
    redis_client: aioredis.Redis,
) -> None:
    store = RoundStore(redis_client)
    await collecting(store)

    with pytest.raises(Aborted, match="is COLLECTING; expected AGGREGATING"):
        await store.transition("run1", 1, Phase.AGGREGATING, Phase.COMPLETED)
    assert (await store.get("run1", 1)).phase is Phase.COLLECTING


async def test_lost_race_gets_aborted(redis_client: aioredis.Redis) -> None:
    store = RoundStore(redis_client)
    await collecting(store)

    outcomes = await asyncio.gather(
        *(store.transition("run1", 1, Phase.COLLECTING, Phase.AGGREGATING) for _ in range(5)),
        return_exceptions=True,
    )

    assert sum(1 for o in outcomes if o is Phase.COLLECTING) == 1
    assert sum(1 for o in outcomes if isinstance(o, Aborted)) == 4


async def test_terminal_transition_clears_the_deadline(redis_client: aioredis.Redis) -> None:
    store = RoundStore(redis_client)
    await collecting(store)
    await store.transition("run1", 1, Phase.COLLECTING, Phase.FAILED, {"failure_reason": "quorum"})

    assert await store.due(10_000) == []
    assert (await store.get("run1", 1)).fields["failure_reason"] == "quorum"


async def test_transition_of_unknown_round_is_not_found(redis_client: aioredis.Redis) -> None:
    with pytest.raises(NotFound, match="round 3 of run nope does not exist"):
        await RoundStore(redis_client).transition("nope", 3, Phase.PENDING, Phase.COLLECTING)


async def test_receipt_is_idempotent_by_digest(redis_client: aioredis.Redis) -> None:
    store = RoundStore(redis_client)
    await collecting(store)

    assert await store.record_receipt("run1", 1, receipt("a")) is ReceiptOutcome.ACCEPTED
    assert await store.record_receipt("run1", 1, receipt("a")) is ReceiptOutcome.DUPLICATE
    with pytest.raises(AlreadyExists, match="already submitted update d1"):
        await store.record_receipt("run1", 1, receipt("a", "d2"))
    assert (await store.get("run1", 1)).receipts["a"].digest == "d1"


async def test_receipt_from_unselected_node_or_closed_round_is_refused(
    redis_client: aioredis.Redis,
) -> None:
    store = RoundStore(redis_client)
    await collecting(store)

    with pytest.raises(FailedPrecondition, match="node 'z' was not selected"):
        await store.record_receipt("run1", 1, receipt("z"))
    await store.transition("run1", 1, Phase.COLLECTING, Phase.AGGREGATING)
    with pytest.raises(FailedPrecondition, match="is AGGREGATING, not COLLECTING"):
        await store.record_receipt("run1", 1, receipt("a"))
    assert (await store.get("run1", 1)).receipts == {}


async def test_dropped_receipt_lets_the_node_resend(redis_client: aioredis.Redis) -> None:
    store = RoundStore(redis_client)
    await collecting(store)
    await store.record_receipt("run1", 1, receipt("a", "d1"))

    await store.drop_receipt("run1", 1, "a")

    assert await store.record_receipt("run1", 1, receipt("a", "d2")) is ReceiptOutcome.ACCEPTED
