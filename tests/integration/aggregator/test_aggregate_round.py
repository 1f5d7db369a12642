"""AggregateRound through a real aggregator and registry: results, idempotency, refusals."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
import torch

from fedmesh.proto.aggregator.v1 import aggregator_pb2 as pb
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.store import keys
from fedmesh.store.fencing import current_token
from fedmesh.tensors import digest_tensors

from .conftest import signer_of

RUN = "run-1"
MODEL = "detector"
FEDAVG = common.AggregationSpec(rule=common.AGGREGATION_RULE_FEDAVG)


async def upload(
    aggregation: Any, node: str, tensors: dict[str, torch.Tensor], samples: int, loss: float
) -> str:
    response = await aggregation.client.submit_tensors(
        run_id=RUN,
        round_no=1,
        node_id=node,
        base_model=aggregation.base_ref,
        tensors=tensors,
        num_samples=samples,
        local_loss=loss,
        chunk_bytes=200,
        signer=signer_of(node),
    )
    return str(response.digest)


async def aggregate(running: Any, **changes: Any) -> pb.AggregateRoundResponse:
    fields: dict[str, Any] = {
        "run_id": RUN,
        "round_no": 1,
        "fencing_token": await current_token(running.redis),
        "aggregation": FEDAVG,
        "base_model": running.base_ref,
    }
    fields.update(changes)
    response: pb.AggregateRoundResponse = await running.client.aggregate_round(**fields)
    return response


@pytest.mark.parametrize("memory_threshold_bytes", [256, 1 << 20], ids=["mapped", "in-memory"])
async def test_fedavg_publishes_base_plus_the_weighted_mean_with_its_lineage(
    start_aggregator: Any, memory_threshold_bytes: int
) -> None:
    async with start_aggregator(memory_threshold_bytes=memory_threshold_bytes) as aggregation:
        await aggregation.open_round()
        samples = {"n1": 10, "n2": 30, "n3": 60}
        losses = {"n1": 0.9, "n2": 0.5, "n3": 0.2}
        deltas = {node: aggregation.delta(seed) for seed, node in enumerate(samples, 1)}
        digests = {
            node: await upload(aggregation, node, deltas[node], samples[node], losses[node])
            for node in samples
        }
        await aggregation.close_collection()

        response = await aggregate(aggregation)

        meta, published = await aggregation.registry.download_tensors(MODEL, 2)
        for name, base in aggregation.base.items():
            mean = sum(deltas[n][name] * samples[n] for n in samples) / 100
            torch.testing.assert_close(published[name], base + mean)
        assert (response.model.name, response.model.version) == (MODEL, 2)
        assert response.model.digest == meta.ref.digest == digest_tensors(published)
        assert (meta.parent_version, meta.run_id, meta.round, meta.rule) == (
            1,
            RUN,
            1,
            common.AGGREGATION_RULE_FEDAVG,
        )
        assert list(meta.participant_update_digests) == [digests[n] for n in sorted(samples)]
        assert list(meta.rejected) == []
        assert response.updates_used == 3
        assert response.mean_local_loss == pytest.approx((9 + 15 + 12) / 100)
        assert [(e.node_id, e.digest, e.excluded, e.clipped) for e in response.evidence] == [
            (node, digests[node], False, False) for node in sorted(samples)
        ]
        assert response.aggregation_seconds > 0
        status = await aggregation.client.status()
        assert (status.rounds_aggregated, status.spooled_updates) == (1, 0)
        assert [p for p in aggregation.spool_files() if p.suffix == ".update"] == []


async def test_a_repeated_call_returns_the_stored_result_without_publishing_again(
    aggregation: Any,
) -> None:
    await aggregation.open_round()
    for seed, node in enumerate(("n1", "n2"), 1):
        await upload(aggregation, node, aggregation.delta(seed), 5, 0.1)
    await aggregation.close_collection()

    first, second = await asyncio.gather(aggregate(aggregation), aggregate(aggregation))
    third = await aggregate(aggregation)

    assert first == second == third
    page = await aggregation.registry.list_versions(MODEL)
    assert [v.ref.version for v in page.versions] == [2, 1]
    assert (await aggregation.client.status()).rounds_aggregated == 1


async def test_multi_krum_excludes_the_outlier_and_the_registry_records_why(
    aggregation: Any,
) -> None:
    nodes = ("n1", "n2", "n3", "n4", "n5")
    await aggregation.open_round(participants=nodes)
    deltas = {node: aggregation.delta(seed) for seed, node in enumerate(nodes, 1)}
    deltas["n5"] = {name: t * 1000 for name, t in deltas["n5"].items()}
    digests = {node: await upload(aggregation, node, deltas[node], 10, 0.4) for node in nodes}
    await aggregation.close_collection()

    response = await aggregate(
        aggregation,
        aggregation=common.AggregationSpec(rule=common.AGGREGATION_RULE_MULTI_KRUM, byzantine_f=1),
    )

    verdicts = {e.node_id: e for e in response.evidence}
    assert [n for n in nodes if verdicts[n].excluded] == ["n5"]
    assert all(verdicts[n].has_score for n in nodes)
    assert verdicts["n5"].score == max(e.score for e in response.evidence)
    assert response.updates_used == 4
    meta = await aggregation.registry.get_version(MODEL, response.model.version)
    assert {r.node_id: r.reason for r in meta.rejected} == {"n5": verdicts["n5"].reason}
    assert list(meta.participant_update_digests) == [digests[n] for n in nodes[:4]]


CASES: list[tuple[str, dict[str, Any], bool, Any, str]] = [
    (
        "stale fencing token",
        {"fencing_token": 0},
        True,
        grpc.StatusCode.FAILED_PRECONDITION,
        "AggregateRound of round 1 of run run-1 refused: fencing token 0 is stale; the current "
        "leader holds 1",
    ),
    (
        "round still collecting",
        {},
        False,
        grpc.StatusCode.FAILED_PRECONDITION,
        "round 1 of run run-1 is COLLECTING, not AGGREGATING",
    ),
    (
        "unknown round",
        {"round_no": 5},
        True,
        grpc.StatusCode.NOT_FOUND,
        "round 5 of run run-1 does not exist",
    ),
    (
        "too few updates for the rule",
        {"aggregation": common.AggregationSpec(rule=common.AGGREGATION_RULE_KRUM, byzantine_f=1)},
        True,
        grpc.StatusCode.FAILED_PRECONDITION,
        "krum needs n ≥ 2f+3 = 5 updates for f=1, got n=2",
    ),
    (
        "privacy without a privacy step",
        {"privacy": common.PrivacySpec(enabled=True, clip_norm=1.0, noise_multiplier=1.1)},
        True,
        grpc.StatusCode.FAILED_PRECONDITION,
        "the run asks for differential privacy, but this aggregator has no central privacy "
        "step configured; refusing to publish an aggregate without its noise",
    ),
    (
        "unspecified rule",
        {"aggregation": common.AggregationSpec()},
        True,
        grpc.StatusCode.INVALID_ARGUMENT,
        "aggregation.rule is AGGREGATION_RULE_UNSPECIFIED; expected one of "
        "AGGREGATION_RULE_FEDAVG, AGGREGATION_RULE_KRUM, AGGREGATION_RULE_MULTI_KRUM, "
        "AGGREGATION_RULE_MEDIAN, AGGREGATION_RULE_TRIMMED_MEAN, AGGREGATION_RULE_BULYAN, "
        "AGGREGATION_RULE_GEOMETRIC_MEDIAN, AGGREGATION_RULE_CENTERED_CLIPPING, "
        "AGGREGATION_RULE_NORM_BOUNDING",
    ),
    (
        "negative f",
        {
            "aggregation": common.AggregationSpec(
                rule=common.AGGREGATION_RULE_MEDIAN, byzantine_f=-1
            )
        },
        True,
        grpc.StatusCode.INVALID_ARGUMENT,
        "aggregation: f must be ≥ 0, got -1",
    ),
    (
        "another base model",
        {"base_model": common.ModelRef(name=MODEL, version=7, digest="ab" * 32)},
        True,
        grpc.StatusCode.FAILED_PRECONDITION,
        f"AggregateRound names base model {MODEL} v7 (digest {'ab' * 32}); round 1 of run run-1 "
        "was opened on {base}",
    ),
]


@pytest.mark.parametrize(
    ("changes", "close", "code", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_each_refusal_has_its_status_and_publishes_nothing(
    aggregation: Any,
    changes: dict[str, Any],
    close: bool,
    code: grpc.StatusCode,
    message: str,
) -> None:
    await aggregation.open_round()
    for seed, node in enumerate(("n1", "n2"), 1):
        await upload(aggregation, node, aggregation.delta(seed), 5, 0.1)
    if close:
        await aggregation.close_collection()

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await aggregate(aggregation, **changes)

    base = f"{MODEL} v1 (digest {aggregation.base_ref.digest})"
    assert info.value.code() == code
    assert info.value.details() == message.replace("{base}", base)
    page = await aggregation.registry.list_versions(MODEL)
    assert [v.ref.version for v in page.versions] == [1]
    assert await aggregation.redis.get(keys.aggregate_result_key(RUN, 1)) is None
    assert (await aggregation.client.status()).spooled_updates == 2
