"""Secure aggregation and privacy through a real coordinator server: StartRun's exact refusals
(with nothing stored), what it accepts, and what a private run's rounds look like from outside."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import grpc
import pytest
import redis.asyncio as aioredis

from fedmesh.client.signing import NodeSigner
from fedmesh.privacy import SampledGaussianAccountant
from fedmesh.privacy.secagg.round_spec import ROUND_FIELD, SecureRoundSpec
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.proto.coordinator.v1 import coordinator_pb2 as pb
from fedmesh.services.coordinator.nodes import NodeRegistry
from fedmesh.services.coordinator.selection import poisson_participants
from fedmesh.store import RoundStore

from .conftest import MODEL, Replica, StartReplica, snapshot

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def secure_spec(
    rule: common.AggregationRule.ValueType = common.AGGREGATION_RULE_FEDAVG,
    byzantine_f: int = 0,
    rule_bucket_size: int = 0,
    min_participants: int = 4,
    target_participants: int = 5,
    **secure: float,
) -> pb.RunSpec:
    """A run spec of the test model with secure aggregation on and the given settings."""
    return pb.RunSpec(
        model_name=MODEL,
        aggregation=common.AggregationSpec(
            rule=rule, byzantine_f=byzantine_f, bucket_size=rule_bucket_size
        ),
        rounds=2,
        min_participants=min_participants,
        target_participants=target_participants,
        collect_deadline_s=30,
        aggregate_deadline_s=30,
        secure_aggregation=common.SecureAggregationSpec(enabled=True, **secure),  # type: ignore[arg-type]
    )


@pytest.fixture
async def api(start_replica: StartReplica, published: int) -> AsyncIterator[Replica]:
    """A coordinator serving its API (no control loop: nothing else writes meanwhile)."""
    async with start_replica(loops=False) as replica:
        for index in range(5):
            await replica.client.register(
                f"node-{index}", 100, "north", {}, NodeSigner.generate().public_key
            )
        yield replica


REFUSALS = [
    pytest.param(
        secure_spec(threshold=-1),
        INVALID,
        "invalid run spec: secure_aggregation.threshold is -1; expected 0 (the default) or more",
        id="negative-threshold",
    ),
    pytest.param(
        secure_spec(neighbours=-2),
        INVALID,
        "invalid run spec: secure_aggregation.neighbours is -2; expected 0 (the default) or more",
        id="negative-neighbours",
    ),
    pytest.param(
        secure_spec(bucket_size=-3),
        INVALID,
        "invalid run spec: secure_aggregation.bucket_size is -3; expected 0 (the default) or more",
        id="negative-bucket",
    ),
    pytest.param(
        secure_spec(min_survivors=-1),
        INVALID,
        "invalid run spec: secure_aggregation.min_survivors is -1; "
        "expected 0 (the default) or more",
        id="negative-survivors",
    ),
    pytest.param(
        secure_spec(threshold=4, neighbours=3),
        INVALID,
        "invalid run spec: secure_aggregation.threshold 4 exceeds neighbours 3; expected at most 3",
        id="threshold-above-neighbours",
    ),
    pytest.param(
        secure_spec(threshold=2, neighbours=4),
        INVALID,
        "invalid run spec: secure_aggregation.threshold 2 is not a strict majority of 4 "
        "neighbours; expected at least 3",
        id="threshold-no-majority",
    ),
    pytest.param(
        secure_spec(clip_range=-0.5),
        INVALID,
        "invalid run spec: secure_aggregation.clip_range is -0.5; expected a positive number "
        "(0: the default 1.0)",
        id="negative-clip-range",
    ),
    pytest.param(
        secure_spec(clip_range=math.inf),
        INVALID,
        "invalid run spec: secure_aggregation.clip_range is inf; expected a positive number "
        "(0: the default 1.0)",
        id="infinite-clip-range",
    ),
    pytest.param(
        secure_spec(bucket_size=1),
        INVALID,
        "invalid run spec: secure_aggregation.bucket_size is 1, which would reveal every "
        "node's update; expected 0 (one bucket of all participants) or at least 2",
        id="bucket-of-one",
    ),
    pytest.param(
        secure_spec(bucket_size=2, min_survivors=3),
        INVALID,
        "invalid run spec: secure_aggregation.min_survivors 3 exceeds bucket_size 2; expected "
        "at most 2, since no bucket can have more survivors than members",
        id="survivors-above-bucket",
    ),
    pytest.param(
        secure_spec(rule=common.AGGREGATION_RULE_MEDIAN, rule_bucket_size=2),
        INVALID,
        "invalid run spec: aggregation.bucket_size is 2 with secure aggregation; masked updates "
        "cannot be bucketed by the rule, use secure_aggregation.bucket_size instead and leave "
        "aggregation.bucket_size 0",
        id="rule-bucketing",
    ),
    pytest.param(
        secure_spec(bucket_size=5, min_participants=4),
        PRECONDITION,
        "secure_aggregation.bucket_size 5 exceeds min_participants 4: a round that closes with "
        "4 updates cannot fill one bucket; expected a bucket_size of at most 4",
        id="bucket-above-quorum",
    ),
    pytest.param(
        secure_spec(min_survivors=5, min_participants=4),
        PRECONDITION,
        "secure_aggregation.min_survivors 5 exceeds min_participants 4: a round that closes "
        "with 4 updates could never be unmasked; expected at most 4",
        id="survivors-above-quorum",
    ),
    pytest.param(
        secure_spec(min_participants=1, target_participants=1),
        PRECONDITION,
        "secure aggregation with min_participants 1: the secure sum of one update is that "
        "update; expected min_participants of at least 2",
        id="sum-of-one",
    ),
    pytest.param(
        secure_spec(
            rule=common.AGGREGATION_RULE_KRUM,
            byzantine_f=1,
            bucket_size=2,
            min_participants=5,
            target_participants=5,
        ),
        PRECONDITION,
        "quorum infeasible with secure aggregation: krum with f=1 needs at least 5 bucket "
        "means, but min_participants 5 in secure buckets of 2 gives 2; expected "
        "min_participants of at least 10",
        id="krum-buckets",
    ),
    pytest.param(
        secure_spec(rule=common.AGGREGATION_RULE_MEDIAN, byzantine_f=1, min_participants=4),
        PRECONDITION,
        "quorum infeasible with secure aggregation: median with f=1 needs at least 3 bucket "
        "means, but min_participants 4 in one secure bucket (bucket_size 0) gives 1; expected "
        "a secure_aggregation.bucket_size s ≥ 2 and min_participants ≥ s·3 (e.g. 2 and 6)",
        id="median-one-bucket",
    ),
]


@pytest.mark.parametrize(("spec", "status", "details"), REFUSALS)
async def test_start_run_refuses_secure_settings_with_the_status_and_why(
    api: Replica,
    redis_client: aioredis.Redis,
    spec: pb.RunSpec,
    status: grpc.StatusCode,
    details: str,
) -> None:
    before = await snapshot(redis_client)

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await api.client.start_run(spec)

    assert (info.value.code(), info.value.details()) == (status, details)
    assert await snapshot(redis_client) == before, "a refused StartRun changed the stored state"
    assert (await api.stub.ListRuns(pb.ListRunsRequest())).runs == []


async def test_start_run_accepts_a_feasible_secure_run_and_keeps_its_settings(
    api: Replica,
) -> None:
    spec = secure_spec(
        rule=common.AGGREGATION_RULE_MEDIAN,
        byzantine_f=1,
        min_participants=6,  # three buckets of two for a median that tolerates one bad one
        target_participants=6,
        threshold=2,
        neighbours=2,
        bucket_size=2,
        min_survivors=2,
        clip_range=3.5,
    )
    await api.client.register("node-5", 100, "north", {}, NodeSigner.generate().public_key)

    started = await api.client.start_run(spec)
    shown = await api.stub.GetRun(pb.GetRunRequest(run_id=started.run_id))

    assert shown.run.status == pb.RUN_STATUS_RUNNING
    assert shown.run.spec.secure_aggregation == common.SecureAggregationSpec(
        enabled=True, threshold=2, neighbours=2, bucket_size=2, min_survivors=2, clip_range=3.5
    )


async def test_a_private_secure_run_opens_poisson_rounds_and_shows_its_epsilon(
    start_replica: StartReplica, published: int, redis_client: aioredis.Redis
) -> None:
    async with start_replica() as replica:
        for index in range(8):
            await replica.client.register(
                f"node-{index}", 100, "north", {}, NodeSigner.generate().public_key
            )
        eligible = await NodeRegistry(redis_client).all()
        seed = next(s for s in range(100) if len(poisson_participants(eligible, 0.5, s, 1)) >= 3)
        spec = secure_spec(min_participants=3, target_participants=3, bucket_size=3)
        spec.seed = seed
        spec.privacy.CopyFrom(
            common.PrivacySpec(
                enabled=True,
                clip_norm=0.5,
                noise_multiplier=5.0,
                delta=1e-5,
                epsilon_budget=10.0,
                sampling_rate=0.5,
            )
        )

        started = await replica.client.start_run(spec)
        shown = await _when_round_opens(replica, started.run_id)

    assert shown.run.epsilon_spent == pytest.approx(
        SampledGaussianAccountant(0.5, 5.0, 1e-5).epsilon_spent(1)
    )
    record = await RoundStore(redis_client).get(started.run_id, 1)
    assert sorted(record.participants) == poisson_participants(eligible, 0.5, seed, 1)
    secure = SecureRoundSpec.from_json(record.fields[ROUND_FIELD])
    assert (secure.bucket_size, secure.noise_stddev, secure.stage_timeout_s) == (3, 2.5, 5.0)


async def _when_round_opens(replica: Replica, run_id: str) -> pb.GetRunResponse:
    for _ in range(200):
        shown = await replica.stub.GetRun(pb.GetRunRequest(run_id=run_id))
        if shown.run.current_round >= 1:
            return shown
        await asyncio.sleep(0.02)
    raise AssertionError("round 1 never opened")
