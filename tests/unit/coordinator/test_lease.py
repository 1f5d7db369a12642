import asyncio

import pytest
import redis.asyncio as aioredis

from fedmesh.errors import FailedPrecondition
from fedmesh.services.coordinator.lease import LeaderLease
from fedmesh.store import fencing, keys


async def test_one_leader_and_a_standby(redis_client: aioredis.Redis) -> None:
    a = LeaderLease(redis_client, "a", ttl_ms=5_000)
    b = LeaderLease(redis_client, "b", ttl_ms=5_000)

    first, second = await a.attempt(), await b.attempt()

    assert first.leader
    assert first.fencing_token == 1
    assert not second.leader
    assert second.holder == "a"
    assert (await a.attempt()).fencing_token == 1


async def test_standby_takes_over_after_expiry_with_a_newer_token(
    redis_client: aioredis.Redis,
) -> None:
    a = LeaderLease(redis_client, "a", ttl_ms=100)
    b = LeaderLease(redis_client, "b", ttl_ms=100)
    old = await a.attempt()

    await asyncio.sleep(0.2)
    new = await b.attempt()

    assert new.leader
    assert new.fencing_token > old.fencing_token
    assert not (await a.attempt()).leader
    assert await fencing.current_token(redis_client) == new.fencing_token


async def test_release_hands_over_at_once(redis_client: aioredis.Redis) -> None:
    a = LeaderLease(redis_client, "a", ttl_ms=60_000)
    b = LeaderLease(redis_client, "b", ttl_ms=60_000)
    await a.attempt()

    await a.release()

    assert (await b.attempt()).leader


async def test_a_deposed_leaders_token_is_refused(redis_client: aioredis.Redis) -> None:
    a = LeaderLease(redis_client, "a", ttl_ms=50)
    old = await a.attempt()
    await asyncio.sleep(0.1)
    await LeaderLease(redis_client, "b", ttl_ms=5_000).attempt()

    with pytest.raises(FailedPrecondition) as info:
        await fencing.require_current(redis_client, old.fencing_token, "publishing v3")

    assert str(info.value) == (
        f"publishing v3 refused: fencing token {old.fencing_token} is stale; "
        f"the current leader holds {old.fencing_token + 1}"
    )


async def test_a_replica_restarted_under_the_same_id_gets_a_new_token(
    redis_client: aioredis.Redis,
) -> None:
    before = await LeaderLease(redis_client, "a", ttl_ms=5_000).attempt()

    after = await LeaderLease(redis_client, "a", ttl_ms=5_000).attempt()

    assert (before.leader, after.leader) == (True, True)
    assert after.fencing_token == before.fencing_token + 1
    assert await fencing.current_token(redis_client) == after.fencing_token


async def test_a_token_lost_by_redis_is_issued_again(redis_client: aioredis.Redis) -> None:
    lease = LeaderLease(redis_client, "a", ttl_ms=5_000)
    await lease.attempt()
    await lease.attempt()
    await redis_client.set(keys.fencing_key(), "0")  # an older append-only file came back

    renewed = await lease.attempt()

    assert renewed.fencing_token == 1
    assert await fencing.current_token(redis_client) == 1
    assert (await lease.attempt()).fencing_token == 1


async def test_a_standby_sees_the_leaders_token(redis_client: aioredis.Redis) -> None:
    leader = await LeaderLease(redis_client, "a", ttl_ms=5_000).attempt()
    standby = LeaderLease(redis_client, "b", ttl_ms=5_000)

    assert not (await standby.attempt()).leader
    assert await standby.current_token() == leader.fencing_token
