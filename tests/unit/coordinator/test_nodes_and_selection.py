import pytest
import redis.asyncio as aioredis

from fedmesh.client.signing import NodeSigner
from fedmesh.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from fedmesh.services.coordinator.nodes import Node, NodeRegistry, NodeState
from fedmesh.services.coordinator.selection import select_participants

KEY = NodeSigner.generate().public_key


async def test_registration_starts_trusted_and_online(redis_client: aioredis.Redis) -> None:
    nodes = NodeRegistry(redis_client)
    node = await nodes.register(
        "n1", 100, "north", {"gpu": "no"}, now_unix_ms=1_000, signing_public_key=KEY
    )

    assert (node.trust, node.evidence_count, node.banned) == (1.0, 0, False)
    assert node.state(now_unix_ms=30_000, stale_after_ms=30_000) is NodeState.ONLINE
    assert node.state(now_unix_ms=31_001, stale_after_ms=30_000) is NodeState.STALE


async def test_heartbeat_brings_a_stale_node_back(redis_client: aioredis.Redis) -> None:
    nodes = NodeRegistry(redis_client)
    await nodes.register("n1", 100, "north", {}, now_unix_ms=0, signing_public_key=KEY)

    node = await nodes.heartbeat("n1", now_unix_ms=60_000)

    assert node.state(now_unix_ms=61_000, stale_after_ms=30_000) is NodeState.ONLINE


async def test_heartbeat_from_unknown_node_is_not_found(redis_client: aioredis.Redis) -> None:
    with pytest.raises(NotFound, match="node 'ghost' is not registered; call RegisterNode first"):
        await NodeRegistry(redis_client).heartbeat("ghost", 1)
    assert await redis_client.keys("*") == []


@pytest.mark.parametrize("node_id", ["", "has space", "x" * 257])
async def test_bad_node_ids_are_refused(redis_client: aioredis.Redis, node_id: str) -> None:
    with pytest.raises(InvalidArgument, match="expected 1–256 characters without spaces"):
        await NodeRegistry(redis_client).register(node_id, 1, "r", {}, 1, KEY)
    assert await redis_client.keys("*") == []


async def test_evidence_decays_trust_and_bans_at_the_third(redis_client: aioredis.Redis) -> None:
    nodes = NodeRegistry(redis_client)
    await nodes.register("n1", 100, "r", {}, 0, KEY)

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
        await nodes.register("n1", 100, "r", {}, 1, KEY)


async def test_reregistration_keeps_trust(redis_client: aioredis.Redis) -> None:
    nodes = NodeRegistry(redis_client)
    await nodes.register("n1", 100, "r", {}, 0, KEY)
    await nodes.add_evidence("n1", "run-1/1")

    again = await nodes.register("n1", 200, "r", {}, 5, KEY)

    assert again.trust == pytest.approx(0.8)
    assert again.samples == 200
    assert again.signing_public_key == KEY


async def test_registration_stores_the_signing_key(redis_client: aioredis.Redis) -> None:
    nodes = NodeRegistry(redis_client)

    node = await nodes.register("n1", 100, "r", {}, 0, KEY)

    assert node.signing_public_key == KEY
    assert (await nodes.get("n1")).signing_public_key == KEY
    assert await redis_client.hget("fm:node:n1", "signing_public_key") == KEY.hex()


async def test_a_second_key_for_a_node_is_refused_and_changes_nothing(
    redis_client: aioredis.Redis,
) -> None:
    nodes = NodeRegistry(redis_client)
    await nodes.register("n1", 100, "north", {"gpu": "no"}, 0, KEY)
    before = await redis_client.hgetall("fm:node:n1")
    other = NodeSigner.generate().public_key

    with pytest.raises(FailedPrecondition) as refused:
        await nodes.register("n1", 999, "south", {}, 7, other)

    assert str(refused.value) == (
        f"node 'n1' registered before with signing key {KEY.hex()[:16]}…, not "
        f"{other.hex()[:16]}…; a node keeps its first key. If the node was re-keyed on "
        "purpose, an operator must delete its record (redis: DEL fm:node:n1) first"
    )
    assert await redis_client.hgetall("fm:node:n1") == before


async def test_deleting_the_record_lets_an_operator_rekey_a_node(
    redis_client: aioredis.Redis,
) -> None:
    nodes = NodeRegistry(redis_client)
    await nodes.register("n1", 100, "r", {}, 0, KEY)
    other = NodeSigner.generate().public_key

    await redis_client.delete("fm:node:n1")
    node = await nodes.register("n1", 100, "r", {}, 1, other)

    assert node.signing_public_key == other


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (b"", "it is 0 bytes; expected a raw 32-byte Ed25519 public key"),
        (bytes(31), "it is 31 bytes; expected a raw 32-byte Ed25519 public key"),
        (bytes(33), "it is 33 bytes; expected a raw 32-byte Ed25519 public key"),
    ],
)
async def test_a_missing_or_malformed_key_is_refused(
    redis_client: aioredis.Redis, key: bytes, problem: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await NodeRegistry(redis_client).register("n1", 1, "r", {}, 1, key)

    assert str(refused.value) == f"signing_public_key of node 'n1' is refused: {problem}"
    assert await redis_client.keys("*") == []


def test_a_node_without_a_signing_key_is_not_eligible() -> None:
    keyed = Node("n1", 10, "r", {}, 1.0, 0, False, 0, KEY)
    keyless = Node("n2", 10, "r", {}, 1.0, 0, False, 0)

    assert keyed.eligible(0, 30_000)
    assert not keyless.eligible(0, 30_000)


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
