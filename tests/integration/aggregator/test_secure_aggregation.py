"""SecAgg+ through the real aggregator: nodes' sessions against its stage RPCs, Redis and spool."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from fedmesh.client.learner import LocalUpdate
from fedmesh.client.secure_aggregation import SecureAggregationClient, SecureRoundRef
from fedmesh.client.secure_round import SecureRoundSession
from fedmesh.client.signing import NodeSigner
from fedmesh.errors import FailedPrecondition
from fedmesh.privacy import SampledGaussianAccountant
from fedmesh.privacy.secagg import FixedPointCodec
from fedmesh.privacy.secagg.quantize import WORD
from fedmesh.privacy.secagg.round_spec import ABORT_FIELD, ROUND_FIELD, SecureRoundSpec
from fedmesh.proto.aggregator.v1 import aggregator_pb2 as pb
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.services.aggregator.secure_sums import SecureSumStore
from fedmesh.store import Phase
from fedmesh.store.fencing import current_token
from fedmesh.tensors import flatten, manifest_of

from .conftest import signer_of, signing_keys

RUN, MODEL = "run-1", "detector"
CLIP_RANGE = 0.5


async def open_secure_round(
    aggregation: Any,
    nodes: Sequence[str],
    spec: SecureRoundSpec,
    round_no: int = 1,
    collect_s: float = 60.0,
) -> int:
    """Create a COLLECTING round with the secure spec, as the coordinator does; its deadline."""
    ref = aggregation.base_ref
    base = {"name": ref.name, "version": ref.version, "digest": ref.digest}
    now = int(time.time() * 1000)
    deadline = now + int(collect_s * 1000)
    fields = {
        "base_model": json.dumps(base),
        ROUND_FIELD: spec.to_json(),
        "signing_keys": signing_keys(nodes),
    }
    await aggregation.rounds.create(RUN, round_no, nodes, deadline, now, fields)
    await aggregation.rounds.transition(RUN, round_no, Phase.PENDING, Phase.COLLECTING)
    return deadline


def node_ids(count: int) -> list[str]:
    return [f"node-{i:02d}" for i in range(count)]


def update_of(aggregation: Any, seed: int) -> LocalUpdate:
    return LocalUpdate(aggregation.delta(seed, scale=0.05), 0.25 + seed / 100, 10 + seed, None)


def quantised(aggregation: Any, update: LocalUpdate, codec: FixedPointCodec) -> NDArray[np.uint32]:
    return codec.quantize(flatten(update.delta, manifest_of(aggregation.base)).double())


def peer_keys(nodes: Sequence[str]) -> dict[str, bytes]:
    """What the coordinator puts in each participant's task: every participant's key."""
    return {node: signer_of(node).public_key for node in nodes}


async def open_sessions(
    aggregation: Any, nodes: Sequence[str], deadline: int, round_no: int = 1
) -> list[SecureRoundSession]:
    client = SecureAggregationClient(aggregation.channel)
    return list(
        await asyncio.gather(
            *(
                SecureRoundSession.open(
                    client,
                    SecureRoundRef(RUN, round_no, node),
                    deadline,
                    signer_of(node),
                    peer_keys(nodes),
                )
                for node in nodes
            )
        )
    )


async def wait_for(condition: Any, timeout_s: float = 20.0) -> None:
    limit = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < limit, "condition not met in time"
        await asyncio.sleep(0.05)


async def aggregate(aggregation: Any, round_no: int = 1, **spec: Any) -> Any:
    rule = spec.pop("rule", common.AGGREGATION_RULE_FEDAVG)
    privacy = spec.pop("privacy", common.PrivacySpec())
    return await aggregation.client.aggregate_round(
        run_id=RUN,
        round_no=round_no,
        fencing_token=await current_token(aggregation.redis),
        aggregation=common.AggregationSpec(rule=rule, **spec),
        base_model=aggregation.base_ref,
        privacy=privacy,
    )


def sums_store(aggregation: Any) -> SecureSumStore:
    return SecureSumStore(aggregation.settings.spool_dir / "secure")


@pytest.mark.parametrize("dropping", [0, 1, 3], ids=["no-dropout", "10pct", "30pct"])
async def test_the_masked_sum_equals_the_plain_fixed_point_sum_with_dropouts(
    aggregation: Any, dropping: int
) -> None:
    nodes = node_ids(10)
    # The masked-input stage closes at the deadline minus one stage timeout when nodes drop.
    spec = SecureRoundSpec(clip_range=CLIP_RANGE, stage_timeout_s=1.0)
    deadline = await open_secure_round(aggregation, nodes, spec, collect_s=5.0 if dropping else 60)
    sessions = await open_sessions(aggregation, nodes, deadline)
    updates = {node: update_of(aggregation, seed) for seed, node in enumerate(nodes)}
    survivors = nodes[dropping:]
    results = await asyncio.gather(
        *(session.contribute(updates[node]) for node, session in zip(nodes, sessions, strict=True)
          if node in survivors)
    )  # fmt: skip

    codec = FixedPointCodec(CLIP_RANGE, len(nodes))
    length = sum(t.numel() for t in aggregation.base.values())
    expected: NDArray[np.uint32] = np.zeros(length, WORD)
    for node in survivors:
        expected += quantised(aggregation, updates[node], codec)
    await wait_for(lambda: _has_receipts(aggregation, len(survivors)))
    sums = sums_store(aggregation).load(RUN, 1)
    assert sums is not None
    assert len(sums.buckets) == 1
    assert sums.contributors == tuple(survivors)
    assert aggregation.metrics.secure_buckets("completed") == 1
    assert np.array_equal(sums_store(aggregation).read(sums, sums.buckets[0]), expected)
    survivor_indices = tuple(sorted(nodes.index(node) for node in survivors))
    assert {result.contributors for result in results} == {survivor_indices}
    record = await aggregation.rounds.get(RUN, 1)
    assert sorted(record.receipts) == survivors
    assert record.receipts[survivors[0]].num_samples == updates[survivors[0]].samples

    await aggregation.close_collection()
    response = await aggregate(aggregation)
    _, published = await aggregation.registry.download_tensors(MODEL, response.model.version)
    manifest = manifest_of(aggregation.base)
    delta = flatten(published, manifest).double() - flatten(aggregation.base, manifest).double()
    plain_mean = codec.dequantize_sum(expected).double() / len(survivors)
    assert torch.allclose(delta, plain_mean, atol=1e-6)
    assert response.updates_used == len(survivors)
    assert sums_store(aggregation).load(RUN, 1) is None  # removed once aggregated


async def _has_receipts(aggregation: Any, count: int) -> bool:
    return len((await aggregation.rounds.get(RUN, 1)).receipts) == count


async def test_no_unmasked_update_reaches_the_spool_or_the_logs(
    aggregation: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    nodes = node_ids(5)
    deadline = await open_secure_round(aggregation, nodes, SecureRoundSpec(clip_range=CLIP_RANGE))
    sessions = await open_sessions(aggregation, nodes, deadline)
    updates = [update_of(aggregation, seed) for seed in range(len(nodes))]
    await asyncio.gather(*(s.contribute(u) for s, u in zip(sessions, updates, strict=True)))
    await wait_for(lambda: _has_receipts(aggregation, len(nodes)))

    stored = b"".join(path.read_bytes() for path in aggregation.spool_files())
    logged = "\n".join(record.getMessage() + repr(record.__dict__) for record in caplog.records)
    codec = FixedPointCodec(CLIP_RANGE, len(nodes))
    manifest = manifest_of(aggregation.base)
    assert stored, "the bucket sum should be stored"
    for update in updates:
        words = quantised(aggregation, update, codec).tobytes()
        floats = flatten(update.delta, manifest).numpy().tobytes()
        for payload in (words, floats):
            for start in range(0, len(payload) - 32, len(payload) // 8):
                window = payload[start : start + 32]
                assert window not in stored
                assert window.hex() not in logged


async def test_a_bucket_below_its_threshold_fails_the_round_and_publishes_nothing(
    aggregation: Any,
) -> None:
    nodes = node_ids(6)
    spec = SecureRoundSpec(clip_range=CLIP_RANGE, min_survivors=5, stage_timeout_s=0.5)
    deadline = await open_secure_round(aggregation, nodes, spec, collect_s=3.0)
    sessions = await open_sessions(aggregation, nodes, deadline)
    contributing = zip(nodes[2:], sessions[2:], strict=True)  # two nodes drop: 4 < 5
    outcomes = await asyncio.gather(
        *(s.contribute(update_of(aggregation, i)) for i, (_, s) in enumerate(contributing)),
        return_exceptions=True,
    )

    for outcome in outcomes:
        assert isinstance(outcome, grpc.aio.AioRpcError)
        assert outcome.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "4 masked inputs received, fewer than min_survivors 5" in (outcome.details() or "")
    await wait_for(lambda: _has_field(aggregation, ABORT_FIELD))
    record = await aggregation.rounds.get(RUN, 1)
    assert "fewer than min_survivors 5" in record.fields[ABORT_FIELD]
    assert aggregation.metrics.secure_buckets("aborted") == 1
    assert aggregation.metrics.secure_buckets("completed") == 0
    assert record.receipts == {}
    assert sums_store(aggregation).load(RUN, 1) is None
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await aggregation.stub.JoinSecureRound(
            pb.JoinSecureRoundRequest(ref=pb.SecureRoundRef(run_id=RUN, round=1, node_id=nodes[0]))
        )
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "run-1 aborted: bucket 0: 4 masked inputs received" in (late.value.details() or "")
    await aggregation.close_collection()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await aggregate(aggregation)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no bucket sum of it is stored" in (refused.value.details() or "")
    latest = await aggregation.registry.get_version(MODEL)
    assert latest.ref.version == aggregation.base_ref.version


async def _has_field(aggregation: Any, name: str) -> bool:
    return name in (await aggregation.rounds.get(RUN, 1)).fields


async def test_sums_of_a_round_that_closed_before_they_were_recorded_are_deleted(
    aggregation: Any,
) -> None:
    nodes = node_ids(4)
    deadline = await open_secure_round(aggregation, nodes, SecureRoundSpec(clip_range=CLIP_RANGE))
    sessions = await open_sessions(aggregation, nodes, deadline)
    await aggregation.close_collection()  # the coordinator moved on while the nodes masked
    updates = [update_of(aggregation, seed) for seed in range(len(nodes))]
    await asyncio.gather(*(s.contribute(u) for s, u in zip(sessions, updates, strict=True)))

    async def nothing_stored() -> bool:
        return not sums_store(aggregation).rounds()

    await wait_for(nothing_stored)
    assert (await aggregation.rounds.get(RUN, 1)).receipts == {}


async def test_a_robust_rule_runs_over_bucket_means_and_blames_buckets_not_nodes(
    aggregation: Any,
) -> None:
    nodes = node_ids(9)
    spec = SecureRoundSpec(clip_range=CLIP_RANGE, bucket_size=3)
    deadline = await open_secure_round(aggregation, nodes, spec)
    sessions = await open_sessions(aggregation, nodes, deadline)
    updates = [update_of(aggregation, seed) for seed in range(len(nodes))]
    await asyncio.gather(*(s.contribute(u) for s, u in zip(sessions, updates, strict=True)))
    await wait_for(lambda: _has_receipts(aggregation, len(nodes)))
    sums = sums_store(aggregation).load(RUN, 1)
    assert sums is not None
    assert [len(b.contributors) for b in sums.buckets] == [3, 3, 3]
    codec = FixedPointCodec(CLIP_RANGE, 3)
    bucket_means = []
    for bucket in sums.buckets:
        total = np.zeros_like(quantised(aggregation, updates[0], codec))
        for node in bucket.contributors:
            total += quantised(aggregation, updates[nodes.index(node)], codec)
        bucket_means.append(codec.dequantize_sum(total).double() / 3)

    await aggregation.close_collection()
    response = await aggregate(aggregation, rule=common.AGGREGATION_RULE_MEDIAN)
    _, published = await aggregation.registry.download_tensors(MODEL, response.model.version)
    manifest = manifest_of(aggregation.base)
    delta = flatten(published, manifest).double() - flatten(aggregation.base, manifest).double()
    assert torch.allclose(delta, torch.stack(bucket_means).median(dim=0).values, atol=1e-6)
    assert len(response.evidence) == 3
    assert all(e.node_id == "" for e in response.evidence)
    assert {e.digest for e in response.evidence} == {b.digest for b in sums.buckets}


async def test_distributed_noise_gives_the_sum_sigma_and_the_version_its_epsilon(
    aggregation: Any,
) -> None:
    nodes = node_ids(6)
    sigma = 0.02
    spec = SecureRoundSpec(clip_range=CLIP_RANGE, min_survivors=6, noise_stddev=sigma)
    deadline = await open_secure_round(aggregation, nodes, spec)
    sessions = await open_sessions(aggregation, nodes, deadline)
    zero = {name: torch.zeros_like(t) for name, t in aggregation.base.items()}
    await asyncio.gather(*(s.contribute(LocalUpdate(zero, 0.1, 5, None)) for s in sessions))
    await wait_for(lambda: _has_receipts(aggregation, len(nodes)))
    await aggregation.close_collection()
    privacy = common.PrivacySpec(
        enabled=True, clip_norm=0.02, noise_multiplier=1.0, delta=1e-5, sampling_rate=0.5
    )
    response = await aggregate(aggregation, privacy=privacy)

    meta, published = await aggregation.registry.download_tensors(MODEL, response.model.version)
    manifest = manifest_of(aggregation.base)
    noise = flatten(published, manifest).double() - flatten(aggregation.base, manifest).double()
    # Six shares of σ/√6 sum to σ; the published mean divides the sum by 6.
    assert float(noise.std()) == pytest.approx(sigma / 6, rel=0.25)
    epsilon = SampledGaussianAccountant(0.5, 1.0, 1e-5).epsilon_spent(1)
    assert response.epsilon_spent == pytest.approx(epsilon)
    assert meta.epsilon_spent == pytest.approx(epsilon)


async def test_a_node_leaves_before_sharing_when_a_neighbours_key_is_not_the_coordinators(
    aggregation: Any,
) -> None:
    nodes = node_ids(5)
    spec = SecureRoundSpec(clip_range=CLIP_RANGE, stage_timeout_s=1.0)
    deadline = await open_secure_round(aggregation, nodes, spec, collect_s=20.0)
    client = SecureAggregationClient(aggregation.channel)
    # node-00's task names another key for node-03 than node-03 signs with: to node-00 that is
    # exactly what a substituted advertisement looks like.
    misled = {**peer_keys(nodes), "node-03": NodeSigner.generate().public_key}

    def open_one(node: str) -> Any:
        keys = misled if node == "node-00" else peer_keys(nodes)
        ref = SecureRoundRef(RUN, 1, node)
        return SecureRoundSession.open(client, ref, deadline, signer_of(node), keys)

    opened = await asyncio.gather(*(open_one(node) for node in nodes), return_exceptions=True)
    refusal = opened[0]
    sessions = [s for s in opened[1:] if isinstance(s, SecureRoundSession)]
    assert isinstance(refusal, FailedPrecondition)
    assert str(refusal) == (
        "round 1 of run run-1: the key advertisement of neighbour node-03 (index 3) is not "
        "signed by the key the coordinator holds for it; the aggregator may be substituting "
        "keys, so node 'node-00' leaves the round before sharing any secret"
    )
    assert len(sessions) == 4
    await asyncio.gather(
        *(s.contribute(update_of(aggregation, i)) for i, s in enumerate(sessions, start=1))
    )
    await wait_for(lambda: _has_receipts(aggregation, 4))
    stored = sums_store(aggregation).load(RUN, 1)
    assert stored is not None
    assert stored.contributors == tuple(nodes[1:])


async def test_bad_stage_calls_get_exact_statuses_and_change_nothing(aggregation: Any) -> None:
    nodes = node_ids(3)
    await open_secure_round(aggregation, nodes, SecureRoundSpec(clip_range=CLIP_RANGE))
    stub = aggregation.stub

    async def refused(call: Any, request: Any) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call(request)
        return error.value.code(), error.value.details() or ""

    code, text = await refused(
        stub.JoinSecureRound,
        pb.JoinSecureRoundRequest(ref=pb.SecureRoundRef(run_id=RUN, round=1, node_id="intruder")),
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "node 'intruder' was not selected for round 1" in text
    code, text = await refused(
        stub.JoinSecureRound, pb.JoinSecureRoundRequest(ref=pb.SecureRoundRef(round=1))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "ref must name run_id, node_id and a round" in text
    code, text = await refused(
        stub.AdvertiseKeys,
        pb.AdvertiseKeysRequest(ref=pb.SecureRoundRef(run_id=RUN, round=2, node_id=nodes[0])),
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "no secure aggregation session runs for round 2" in text
    joined = await stub.JoinSecureRound(
        pb.JoinSecureRoundRequest(ref=pb.SecureRoundRef(run_id=RUN, round=1, node_id=nodes[0]))
    )
    assert list(joined.participants) == sorted(nodes)
    ref = pb.SecureRoundRef(run_id=RUN, round=1, node_id=nodes[0])
    keys = (b"\x02" * 32, b"\x01" * 32)
    context, index = joined.round_context, joined.node_index
    code, text = await refused(
        stub.AdvertiseKeys,
        pb.AdvertiseKeysRequest(ref=ref, encryption_public_key=keys[0], masking_public_key=keys[1]),
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert text == (
        f"bucket 0: the key advertisement of node {index} is not signed by the Ed25519 key its "
        "node registered with the coordinator (signature is empty)"
    )
    code, text = await refused(
        stub.AdvertiseKeys,
        pb.AdvertiseKeysRequest(
            ref=ref,
            encryption_public_key=keys[0],
            masking_public_key=keys[1],
            signature=signer_of(nodes[1]).sign_advertisement(context, index, *keys),
        ),
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert text == (
        f"bucket 0: the key advertisement of node {index} is not signed by the Ed25519 key its "
        "node registered with the coordinator"
    )
    code, text = await refused(
        stub.AdvertiseKeys,
        pb.AdvertiseKeysRequest(
            ref=ref,
            encryption_public_key=b"short",
            masking_public_key=keys[1],
            signature=signer_of(nodes[0]).sign_advertisement(context, index, b"short", keys[1]),
        ),
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"node {index}: public key is 5 bytes, expected 32" in text

    plain = {"name": MODEL, "version": 1, "digest": aggregation.base_ref.digest}
    await aggregation.rounds.create(RUN, 3, nodes, 10**13, 1, {"base_model": json.dumps(plain)})
    code, text = await refused(
        stub.JoinSecureRound,
        pb.JoinSecureRoundRequest(ref=pb.SecureRoundRef(run_id=RUN, round=3, node_id=nodes[0])),
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "round 3 of run run-1 does not use secure aggregation" in text
    assert (await aggregation.rounds.get(RUN, 1)).receipts == {}


async def test_a_secure_round_without_its_participants_keys_is_refused(aggregation: Any) -> None:
    nodes = node_ids(3)
    spec = SecureRoundSpec(clip_range=CLIP_RANGE)
    await open_secure_round(aggregation, nodes, spec, round_no=1)
    await aggregation.redis.hset("fm:{run:run-1}:round:1", "signing_keys", signing_keys(nodes[:2]))
    await open_secure_round(aggregation, nodes, spec, round_no=2)
    await aggregation.redis.hdel("fm:{run:run-1}:round:2", "signing_keys")
    ref = pb.SecureRoundRef(run_id=RUN, round=1, node_id=nodes[2])
    joined = await aggregation.stub.JoinSecureRound(pb.JoinSecureRoundRequest(ref=ref))
    keys = (b"\x02" * 32, b"\x01" * 32)
    signature = signer_of(nodes[2]).sign_advertisement(
        joined.round_context, joined.node_index, *keys
    )

    with pytest.raises(grpc.aio.AioRpcError) as keyless:
        await aggregation.stub.AdvertiseKeys(
            pb.AdvertiseKeysRequest(
                ref=ref, encryption_public_key=keys[0], masking_public_key=keys[1],
                signature=signature,
            )
        )  # fmt: skip
    with pytest.raises(grpc.aio.AioRpcError) as without:
        await aggregation.stub.JoinSecureRound(
            pb.JoinSecureRoundRequest(ref=pb.SecureRoundRef(run_id=RUN, round=2, node_id=nodes[0]))
        )

    assert keyless.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert keyless.value.details() == (
        "round 1 of run run-1 has no signing key recorded for node 'node-02'"
    )
    assert without.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    reason = (
        "the round record has no valid signing_keys field, so key advertisements cannot be verified"
    )
    assert without.value.details() == f"round 2 of run run-1: {reason}"
    assert (await aggregation.rounds.get(RUN, 2)).fields[ABORT_FIELD] == reason


@pytest.mark.parametrize("next_call", ["join", "stage"])
async def test_a_session_lost_in_a_restart_aborts_the_round_with_its_reason(
    start_aggregator: Any, next_call: str
) -> None:
    nodes = node_ids(3)
    async with start_aggregator() as first:
        await open_secure_round(first, nodes, SecureRoundSpec(clip_range=CLIP_RANGE))
        await first.stub.JoinSecureRound(
            pb.JoinSecureRoundRequest(ref=pb.SecureRoundRef(run_id=RUN, round=1, node_id=nodes[0]))
        )
    async with start_aggregator() as second:
        ref = pb.SecureRoundRef(run_id=RUN, round=1, node_id=nodes[0])
        # A node that had not joined yet joins; one in the middle of its stages retries here.
        call = (
            second.stub.JoinSecureRound(pb.JoinSecureRoundRequest(ref=ref))
            if next_call == "join"
            else second.stub.AdvertiseKeys(pb.AdvertiseKeysRequest(ref=ref))
        )
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        record = await second.rounds.get(RUN, 1)
    assert "restarted or was replaced" in (error.value.details() or "")
    assert "restarted or was replaced" in record.fields[ABORT_FIELD]
