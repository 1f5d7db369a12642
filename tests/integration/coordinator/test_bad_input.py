"""Bad requests through a real coordinator server: the exact status and message, no state change."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
import redis.asyncio as aioredis

from fedmesh.client.signing import NodeSigner
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.proto.coordinator.v1 import coordinator_pb2 as pb

from .conftest import MODEL, Replica, StartReplica, snapshot

KEYS = {f"node-{index}": NodeSigner.generate().public_key for index in range(5)}
RULES = (
    "fedavg, krum, multi_krum, median, trimmed_mean, bulyan, geometric_median, "
    "centered_clipping, norm_bounding"
)


def run_spec(**changes: object) -> pb.RunSpec:
    """A valid FedAvg spec of the test model, changed by keyword."""
    spec = pb.RunSpec(
        model_name=MODEL,
        aggregation=common.AggregationSpec(rule=common.AGGREGATION_RULE_FEDAVG),
        rounds=2,
        min_participants=3,
        target_participants=5,
        collect_deadline_s=30,
        aggregate_deadline_s=30,
    )
    for name, value in changes.items():
        if name == "aggregation":
            assert isinstance(value, common.AggregationSpec)
            spec.aggregation.CopyFrom(value)
        else:
            setattr(spec, name, value)
    return spec


async def refused(
    redis: aioredis.Redis, call: Callable[[], Awaitable[object]]
) -> grpc.aio.AioRpcError:
    """The error ``call`` fails with, after checking that Redis is exactly as before."""
    before = await snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call()
    assert await snapshot(redis) == before, "a refused request changed the stored state"
    return info.value


@pytest.fixture
async def api(start_replica: StartReplica, published: int) -> AsyncIterator[Replica]:
    """A coordinator serving its API (no control loop: nothing else writes meanwhile)."""
    async with start_replica(loops=False) as replica:
        for node, key in KEYS.items():
            await replica.client.register(node, 100, "north", {}, key)
        yield replica


async def test_start_run_with_an_impossible_quorum(
    api: Replica, redis_client: aioredis.Redis
) -> None:
    krum = common.AggregationSpec(rule=common.AGGREGATION_RULE_KRUM, byzantine_f=1)

    error = await refused(redis_client, lambda: api.client.start_run(run_spec(aggregation=krum)))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "invalid run spec: quorum infeasible: krum with f=1 needs at least 5 updates, "
        "but min_participants is 3"
    )


async def test_start_run_with_an_unknown_rule(api: Replica, redis_client: aioredis.Redis) -> None:
    unknown = common.AggregationSpec(rule=99)  # type: ignore[arg-type]

    error = await refused(redis_client, lambda: api.client.start_run(run_spec(aggregation=unknown)))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        f"invalid run spec: unknown aggregation rule 'enum value 99'; expected one of {RULES}"
    )


async def test_start_run_without_a_rule(api: Replica, redis_client: aioredis.Redis) -> None:
    unset = common.AggregationSpec()

    error = await refused(redis_client, lambda: api.client.start_run(run_spec(aggregation=unset)))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        f"invalid run spec: aggregation rule is not set; expected one of {RULES}"
    )


async def test_start_run_with_a_negative_deadline(
    api: Replica, redis_client: aioredis.Redis
) -> None:
    error = await refused(
        redis_client, lambda: api.client.start_run(run_spec(collect_deadline_s=-5.0))
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "invalid run spec: collect deadline is -5.0 s; expected a positive number"
    )


async def test_start_run_names_every_problem_at_once(
    api: Replica, redis_client: aioredis.Redis
) -> None:
    bad = run_spec(rounds=-1, aggregate_deadline_s=-1.0, target_participants=2)

    error = await refused(redis_client, lambda: api.client.start_run(bad))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "invalid run spec: rounds is -1; expected at least 1; aggregate deadline is -1.0 s; "
        "expected a positive number; target_participants 2 is below min_participants 3"
    )


async def test_start_run_without_a_spec(api: Replica, redis_client: aioredis.Redis) -> None:
    error = await refused(redis_client, lambda: api.stub.StartRun(pb.StartRunRequest()))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "StartRun needs a spec"


async def test_start_run_of_a_model_the_registry_lacks(
    api: Replica, redis_client: aioredis.Redis
) -> None:
    error = await refused(
        redis_client, lambda: api.client.start_run(run_spec(model_name="no-such-model"))
    )

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == (
        "model 'no-such-model' has no version in the registry; publish an initial version "
        "first (fedmesh models init no-such-model)"
    )


async def test_start_run_with_too_few_eligible_nodes(
    api: Replica, redis_client: aioredis.Redis
) -> None:
    spec = run_spec(min_participants=6, target_participants=6)

    error = await refused(redis_client, lambda: api.client.start_run(spec))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == (
        "5 eligible nodes are online; the run needs at least 6 (min_participants)"
    )


async def test_heartbeat_from_an_unknown_node(api: Replica, redis_client: aioredis.Redis) -> None:
    error = await refused(redis_client, lambda: api.client.heartbeat("ghost"))

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "node 'ghost' is not registered; call RegisterNode first"


async def test_task_stream_of_an_unknown_node(api: Replica, redis_client: aioredis.Redis) -> None:
    async def first_task() -> object:
        async for task in api.client.tasks("ghost", stream_timeout_s=5):
            return task
        return None

    error = await refused(redis_client, first_task)

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "node 'ghost' is not registered"


async def test_registration_with_a_bad_node_id(api: Replica, redis_client: aioredis.Redis) -> None:
    key = NodeSigner.generate().public_key
    error = await refused(redis_client, lambda: api.client.register("has space", 1, "r", {}, key))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "node id 'has space' is invalid; expected 1–256 characters without spaces"
    )


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (b"", "it is 0 bytes; expected a raw 32-byte Ed25519 public key"),
        (b"\x01" * 64, "it is 64 bytes; expected a raw 32-byte Ed25519 public key"),
    ],
    ids=["missing", "wrong size"],
)
async def test_registration_without_a_signing_key(
    api: Replica, redis_client: aioredis.Redis, key: bytes, problem: str
) -> None:
    error = await refused(redis_client, lambda: api.client.register("node-9", 1, "r", {}, key))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == f"signing_public_key of node 'node-9' is refused: {problem}"


async def test_registration_with_another_key_than_the_first(
    api: Replica, redis_client: aioredis.Redis
) -> None:
    other = NodeSigner.generate().public_key

    error = await refused(
        redis_client, lambda: api.client.register("node-1", 100, "north", {}, other)
    )
    again = await api.client.register("node-1", 100, "north", {}, KEYS["node-1"])

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == (
        f"node 'node-1' registered before with signing key {KEYS['node-1'].hex()[:16]}…, not "
        f"{other.hex()[:16]}…; a node keeps its first key. If the node was re-keyed on purpose, "
        "an operator must delete its record (redis: DEL fm:node:node-1) first"
    )
    assert again.node.node_id == "node-1"


async def test_get_and_stop_of_an_unknown_run(api: Replica, redis_client: aioredis.Redis) -> None:
    get = await refused(redis_client, lambda: api.client.get_run("run-nope"))
    stop = await refused(redis_client, lambda: api.client.stop_run("run-nope", "why"))

    assert (get.code(), stop.code()) == (grpc.StatusCode.NOT_FOUND,) * 2
    assert get.details() == stop.details() == "run 'run-nope' does not exist"
