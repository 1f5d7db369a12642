import pytest
import redis.asyncio as aioredis

from fedmesh.errors import InvalidArgument, NotFound, PermissionDenied
from fedmesh.services.coordinator.nodes import Node, NodeRegistry, NodeState
from fedmesh.services.coordinator.selection import select_participants


async def test_registration_starts_trusted_and_online(redis_client: aioredis.Redis) -> None:
    nodes = NodeRegistry(redis_client)
    node = await nodes.register("n1", 100, "north", {"gpu": "no"}, now_unix_ms=1_000)

    assert (node.trust, node.evidence_count, node.banned) == (1.0, 0, False)
    assert node.state(now_unix_ms=30_000, stale_after_ms=30_000) is NodeState.ONLINE
    assert node.state(now_unix_ms=31_001, stale_after_ms=30_000) is NodeState.STALE


async def test_heartbeat_brings_a_stale_node_back(redis_client: aioredis.Redis) -> None:
    nodes = NodeRegistry(redis_client)
    await nodes.register("n1", 100, "north", {}, now_unix_ms=0)

    node = await nodes.heartbeat("n1", now_unix_ms=60_000)

    assert node.state(now_unix_ms=61_000, stale_after_ms=30_000) is NodeState.ONLINE


async def test_heartbeat_from_unknown_node_is_not_found(redis_client: aioredis.Redis) -> None:
    with pytest.raises(NotFound, match="node 'ghost' is not registered; call RegisterNode first"):
        await NodeRegistry(redis_client).heartbeat("ghost", 1)
    assert await redis_client.keys("*") == []


@pytest.mark.parametrize("node_id", ["", "has space", "x" * 257])
async def test_bad_node_ids_are_refused(redis_client: aioredis.Redis, node_id: str) -> None:
    with pytest.raises(InvalidArgument, match="expected 1–256 characters without spaces"):
        await NodeRegistry(redis_client).register(node_id, 1, "r", {}, 1)
    assert await redis_client.keys("*") == []


async def test_evidence_decays_trust_and_bans_at_the_third(redis_client: aioredis.Redis) -> None:
    nodes = NodeRegistry(redis_client)
    await nodes.register("n1", 100, "r", {}, 0)

    first = await nodes.add_evidence("n1", "run-1/1")
    second = await nodes.add_evidence("n1", "run-1/2")
    third = await nodes.add_evidence("n1", "run-1/3")

    assert first.trust == pytest.approx(0.8)
    assert not first.banned
    assert second.trust == pytest.approx(0.64)
    assert not second.banned
    assert third.trust == pytest.approx(0.512)
    assert third.banned
    assert (await nodes.get("n1")).state(0, 30_000) is NodeState.BANNED
    with pytest.raises(PermissionDenied, match="node 'n1' is banned after 3 pieces of evidence"):
        await nodes.register("n1", 100, "r", {}, 1)


async def test_reregistration_keeps_trust(redis_client: aioredis.Redis) -> None:
    nodes = NodeRegistry(redis_client)
    await nodes.register("n1", 100, "r", {}, 0)
    await nodes.add_evidence("n1", "run-1/1")

    again = await nodes.register("n1", 200, "r", {}, 5)

    assert again.trust == pytest.approx(0.8)
    assert again.samples == 200


def node(node_id: str, trust: float) -> Node:
    return Node(node_id, 10, "r", {}, trust, 0, False, 0)


def test_selection_is_reproducible_and_distinct() -> None:
    pool = [node(f"n{i}", 1.0) for i in range(20)]

    first = select_participants(pool, 8, seed=3, round_no=1)

    assert first == select_participants(list(reversed(pool)), 8, seed=3, round_no=1)
    assert len(set(first)) == 8
    assert first != select_participants(pool, 8, seed=3, round_no=2)


def test_selection_favours_trusted_nodes() -> None:
    pool = [node(f"t{i}", 1.0) for i in range(10)] + [node(f"u{i}", 0.05) for i in range(10)]

    picks = [p for r in range(200) for p in select_participants(pool, 5, seed=1, round_no=r)]

    trusted = sum(1 for p in picks if p.startswith("t"))
    assert trusted / len(picks) > 0.9
