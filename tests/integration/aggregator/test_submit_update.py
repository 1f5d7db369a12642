"""SubmitUpdate through a real aggregator: accepted, acknowledged again, each bad input refused."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedmesh.client.aggregator import manifest_to_proto
from fedmesh.client.signing import NodeSigner, update_message
from fedmesh.proto.aggregator.v1 import aggregator_pb2 as pb
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.store import Phase
from fedmesh.store.fencing import next_token
from fedmesh.tensors import digest_tensors, encode, manifest_of

from .conftest import signer_of

RUN = "run-1"


def header_of(
    aggregation: Any, tensors: dict[str, torch.Tensor], node: str = "n1", **changes: Any
) -> pb.UpdateHeader:
    payload = encode(tensors)
    header = pb.UpdateHeader(
        run_id=RUN,
        round=1,
        node_id=node,
        manifest=manifest_to_proto(manifest_of(tensors)),
        digest=digest_tensors(tensors),
        num_samples=20,
        payload_bytes=len(payload),
        base_model=aggregation.base_ref,
        local_loss=0.3,
    )
    for field, value in changes.items():
        if isinstance(value, common.ModelRef | common.TensorManifest):
            getattr(header, field).CopyFrom(value)
        else:
            setattr(header, field, value)
    if "signature" not in changes and "nonce" not in changes:
        signed = signer_of(node).sign_update(RUN, header.round, node, header.digest)
        header.nonce, header.signature = signed.nonce, signed.signature
    return header


def signed_by(key: Ed25519PrivateKey, header: pb.UpdateHeader, nonce: bytes) -> pb.UpdateHeader:
    """The header with ``nonce``, signed by ``key``."""
    signed = pb.UpdateHeader()
    signed.CopyFrom(header)
    signed.nonce = nonce
    message = update_message(header.run_id, header.round, header.node_id, nonce, header.digest)
    signed.signature = key.sign(message)
    return signed


async def stream(
    header: pb.UpdateHeader | None, payload: bytes, size: int = 100
) -> AsyncIterator[pb.SubmitUpdateRequest]:
    if header is not None:
        yield pb.SubmitUpdateRequest(header=header)
    for start in range(0, len(payload), size):
        yield pb.SubmitUpdateRequest(chunk=payload[start : start + size])


async def refused(
    aggregation: Any, requests: AsyncIterator[pb.SubmitUpdateRequest]
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await aggregation.stub.SubmitUpdate(requests)
    record = await aggregation.rounds.get(RUN, 1)
    assert dict(record.receipts) == {}
    assert aggregation.spool_files() == []
    status = await aggregation.client.status()
    assert (status.spooled_updates, status.spooled_bytes) == (0, 0)
    return info.value


async def test_an_update_is_accepted_and_a_retry_is_a_duplicate(aggregation: Any) -> None:
    await aggregation.open_round()
    delta = aggregation.delta(1)

    first = await aggregation.client.submit_tensors(
        run_id=RUN,
        round_no=1,
        node_id="n1",
        base_model=aggregation.base_ref,
        tensors=delta,
        num_samples=20,
        local_loss=0.3,
        chunk_bytes=64,
        signer=signer_of("n1"),
    )
    again = await aggregation.client.submit_tensors(
        run_id=RUN,
        round_no=1,
        node_id="n1",
        base_model=aggregation.base_ref,
        tensors=delta,
        num_samples=20,
        local_loss=0.3,
        signer=signer_of("n1"),
    )

    size = len(encode(delta))
    assert (first.digest, first.received_bytes, first.duplicate) == (
        digest_tensors(delta),
        size,
        False,
    )
    assert (again.digest, again.received_bytes, again.duplicate) == (first.digest, size, True)
    receipt = (await aggregation.rounds.get(RUN, 1)).receipts["n1"]
    assert (receipt.digest, receipt.num_samples, receipt.local_loss) == (first.digest, 20, 0.3)
    status = await aggregation.client.status()
    assert (status.spooled_updates, status.spooled_bytes, status.updates_rejected) == (1, size, 0)


def wrong_shape(aggregation: Any) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = aggregation.delta(1)
    tensors["layer.weight"] = torch.zeros(8, 16)
    return tensors


def with_nan(aggregation: Any) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = aggregation.delta(1)
    tensors["layer.bias"][3] = math.nan
    return tensors


CASES: list[tuple[str, Callable[[Any], AsyncIterator[pb.SubmitUpdateRequest]], Any, str]] = [
    (
        "unknown round",
        lambda a: stream(header_of(a, a.delta(1), round=7), b""),
        grpc.StatusCode.NOT_FOUND,
        "round 7 of run run-1 does not exist",
    ),
    (
        "node not selected",
        lambda a: stream(header_of(a, a.delta(1), node="n9"), b""),
        grpc.StatusCode.FAILED_PRECONDITION,
        "node 'n9' was not selected for round 1 of run run-1",
    ),
    (
        "other base model",
        lambda a: stream(
            header_of(a, a.delta(1), base_model=common.ModelRef(name="detector", version=9)),
            b"",
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "the update is a delta on detector v9 (digest ); round 1 of run run-1 aggregates "
        "onto detector v1 (digest {digest})",
    ),
    (
        "wrong shape",
        lambda a: stream(header_of(a, wrong_shape(a)), encode(wrong_shape(a))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "tensor 'layer.weight' of the header manifest is float32 [8, 16]; expected float32 [16, 8]",
    ),
    (
        "over the size limit",
        lambda a: stream(header_of(a, a.delta(1), payload_bytes=(1 << 20) + 1), b""),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "update of 1048577 bytes exceeds the aggregator's limit of 1048576 bytes "
        "(FEDMESH_AGGREGATOR_MAX_UPDATE_BYTES)",
    ),
    (
        "digest mismatch",
        lambda a: stream(header_of(a, a.delta(1), digest="0" * 64), encode(a.delta(1))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "payload hashes to SHA-256 {delta_digest}; the header announced " + "0" * 64,
    ),
    (
        "NaN",
        lambda a: stream(header_of(a, with_nan(a)), encode(with_nan(a))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "tensor 'layer.bias' holds NaN at element 3; every value must be finite",
    ),
    (
        "unknown dtype",
        lambda a: stream(
            header_of(
                a,
                a.delta(1),
                manifest=common.TensorManifest(
                    tensors=[common.TensorSpec(name="x", dtype="complex64", shape=[2])]
                ),
            ),
            b"",
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "header.manifest: tensor 'x' has dtype 'complex64'; expected one of bfloat16, bool, "
        "float16, float32, float64, int16, int32, int64, int8, uint8",
    ),
    (
        "unsigned",
        lambda a: stream(header_of(a, a.delta(1), signature=b""), b""),
        grpc.StatusCode.UNAUTHENTICATED,
        "header.signature is empty; node 'n1' must sign its update with the Ed25519 key it "
        "registered with the coordinator",
    ),
    (
        "signed by another key",
        lambda a: stream(
            signed_by(Ed25519PrivateKey.generate(), header_of(a, a.delta(1)), bytes(16)), b""
        ),
        grpc.StatusCode.UNAUTHENTICATED,
        "header.signature does not verify with the Ed25519 key node 'n1' registered (over run, "
        "round, node, nonce and digest {delta_digest}); refusing the update",
    ),
    (
        "malformed nonce",
        lambda a: stream(header_of(a, a.delta(1), nonce=b"short", signature=bytes(64)), b""),
        grpc.StatusCode.INVALID_ARGUMENT,
        "header.nonce has 5 bytes; expected 16–64 random bytes, fresh for every update",
    ),
    (
        "empty stream",
        lambda a: stream(None, b""),
        grpc.StatusCode.INVALID_ARGUMENT,
        "SubmitUpdate stream is empty; expected a header, then chunks",
    ),
    (
        "chunk first",
        lambda a: stream(None, b"abc"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "SubmitUpdate stream starts with a chunk; expected the header first",
    ),
]


@pytest.mark.parametrize(
    ("requests", "code", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_each_bad_input_is_refused_with_its_status_and_nothing_is_stored(
    aggregation: Any,
    requests: Callable[[Any], AsyncIterator[pb.SubmitUpdateRequest]],
    code: grpc.StatusCode,
    message: str,
) -> None:
    await aggregation.open_round()

    error = await refused(aggregation, requests(aggregation))

    assert error.code() == code
    assert error.details() == message.format(
        digest=aggregation.base_ref.digest, delta_digest=digest_tensors(aggregation.delta(1))
    )
    assert (await aggregation.client.status()).updates_rejected == 1


async def test_a_nonce_reused_in_a_later_round_is_refused_and_its_retry_is_not(
    aggregation: Any,
) -> None:
    key = Ed25519PrivateKey.generate()
    public = NodeSigner(key).public_key.hex()
    base = aggregation.base_ref
    fields = {
        "base_model": json.dumps(
            {"name": base.name, "version": base.version, "digest": base.digest}
        ),
        "signing_keys": json.dumps({"n1": public}),
    }
    for round_no in (1, 2):
        await aggregation.rounds.create(RUN, round_no, ["n1"], 10**13, 1, fields)
        await aggregation.rounds.transition(RUN, round_no, Phase.PENDING, Phase.COLLECTING)
    nonce = bytes(range(16))
    first, second = aggregation.delta(1), aggregation.delta(2)
    earlier = signed_by(key, header_of(aggregation, first), nonce)
    await aggregation.stub.SubmitUpdate(stream(earlier, encode(first)))
    retried = await aggregation.stub.SubmitUpdate(stream(earlier, encode(first)))
    replayed = signed_by(key, header_of(aggregation, second, round=2), nonce)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await aggregation.stub.SubmitUpdate(stream(replayed, encode(second)))

    assert retried.duplicate is True
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.details() == (
        f"header.nonce was already used by node 'n1' in run run-1 for update "
        f"{digest_tensors(first)} of round 1; every update needs a fresh nonce"
    )
    assert dict((await aggregation.rounds.get(RUN, 2)).receipts) == {}
    assert len([p for p in aggregation.spool_files() if p.suffix == ".update"]) == 1
    assert (await aggregation.client.status()).updates_rejected == 1


async def test_a_second_header_is_refused(aggregation: Any) -> None:
    await aggregation.open_round()
    header = header_of(aggregation, aggregation.delta(1))

    async def twice() -> AsyncIterator[pb.SubmitUpdateRequest]:
        yield pb.SubmitUpdateRequest(header=header)
        yield pb.SubmitUpdateRequest(header=header)

    error = await refused(aggregation, twice())

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "SubmitUpdate stream carries a second header; expected only chunks after the first"
    )


async def test_a_closed_round_and_a_conflicting_update_are_refused(aggregation: Any) -> None:
    await aggregation.open_round()
    first, second = aggregation.delta(1), aggregation.delta(2)
    await aggregation.stub.SubmitUpdate(stream(header_of(aggregation, first), encode(first)))

    with pytest.raises(grpc.aio.AioRpcError) as conflict:
        await aggregation.stub.SubmitUpdate(stream(header_of(aggregation, second), encode(second)))
    await aggregation.close_collection()
    with pytest.raises(grpc.aio.AioRpcError) as closed:
        await aggregation.stub.SubmitUpdate(
            stream(header_of(aggregation, second, node="n2"), encode(second))
        )

    assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert conflict.value.details() == (
        f"node 'n1' already submitted update {digest_tensors(first)} for round 1 of run "
        f"run-1; refusing a different update {digest_tensors(second)}"
    )
    assert closed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert closed.value.details() == "round 1 of run run-1 is AGGREGATING, not COLLECTING"
    record = await aggregation.rounds.get(RUN, 1)
    assert {node: r.digest for node, r in record.receipts.items()} == {"n1": digest_tensors(first)}
    assert len([p for p in aggregation.spool_files() if p.suffix == ".update"]) == 1


async def test_a_large_upload_refused_before_or_during_the_stream_gets_the_real_status(
    start_aggregator: Any,
) -> None:
    # Past the flow-control window: a sender still writing when the call ends would
    # otherwise see grpcio's INTERNAL "Internal error from Core" instead of the status.
    async with start_aggregator(max_update_bytes=64 << 20) as aggregation:
        await next_token(aggregation.redis)
        base = await aggregation.registry.publish_tensors("big", {"w": torch.zeros(4 << 20)})
        await aggregation.open_round(base_ref=base.ref)
        good = {"w": torch.full((4 << 20,), 0.25)}
        bad = {"w": torch.full((4 << 20,), 0.25)}
        bad["w"][3 << 20] = math.nan
        outcomes = []
        for node, tensors in [("n9", good), ("n2", bad), ("n1", good), ("n1", good), ("n1", bad)]:
            try:
                response = await aggregation.client.submit_tensors(
                    run_id=RUN,
                    round_no=1,
                    node_id=node,
                    base_model=base.ref,
                    tensors=tensors,
                    num_samples=1,
                    local_loss=0.1,
                    signer=signer_of(node),
                )
                outcomes.append(f"OK duplicate={response.duplicate}")
            except grpc.aio.AioRpcError as exc:
                outcomes.append(f"{exc.code().name}: {exc.details()}")

    assert outcomes == [
        "FAILED_PRECONDITION: node 'n9' was not selected for round 1 of run run-1",
        "INVALID_ARGUMENT: tensor 'w' holds NaN at element 3145728; every value must be finite",
        "OK duplicate=False",
        "OK duplicate=True",
        f"ALREADY_EXISTS: node 'n1' already submitted update {digest_tensors(good)} for round 1 "
        f"of run run-1; refusing a different update {digest_tensors(bad)}",
    ]
