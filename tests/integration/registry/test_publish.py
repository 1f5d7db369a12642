"""PublishModel end to end: round trip, the hash chain, idempotency, fencing, bad input."""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
import pytest
import torch

from fedmesh.client.registry import Provenance
from fedmesh.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from fedmesh.proto.common.v1 import common_pb2
from fedmesh.proto.registry.v1 import registry_pb2 as pb
from fedmesh.store.fencing import next_token
from fedmesh.tensors import digest_tensors, encode, encode_header, manifest_of

ModelFactory = Callable[..., dict[str, torch.Tensor]]
UPDATE_A = "a" * 64
UPDATE_B = "b" * 64


def header_for(
    tensors: dict[str, torch.Tensor], name: str = "detector", **fields: Any
) -> pb.PublishHeader:
    manifest = manifest_of(tensors)
    header = pb.PublishHeader(
        name=name,
        digest=digest_tensors(tensors),
        size_bytes=len(encode_header(manifest)) + manifest.nbytes,
        manifest=common_pb2.TensorManifest(
            tensors=[
                common_pb2.TensorSpec(name=s.name, dtype=s.dtype, shape=list(s.shape))
                for s in manifest.tensors
            ]
        ),
    )
    for key, value in fields.items():
        if isinstance(value, list):
            getattr(header, key).extend(value)
        else:
            setattr(header, key, value)
    return header


def messages(header: pb.PublishHeader | None, payload: bytes) -> list[pb.PublishModelRequest]:
    out = [] if header is None else [pb.PublishModelRequest(header=header)]
    return out + [
        pb.PublishModelRequest(chunk=payload[i : i + 4096]) for i in range(0, len(payload), 4096)
    ]


async def refused(
    registry: Any, requests: Sequence[pb.PublishModelRequest]
) -> grpc.aio.AioRpcError:
    async def stream() -> AsyncIterator[pb.PublishModelRequest]:
        for request in requests:
            yield request

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await registry.stub.PublishModel(stream())
    return info.value


async def assert_nothing_stored(registry: Any) -> None:
    assert await registry.client.list_models() == []
    assert await registry.redis.keys("fm:{model:*") == []
    assert await registry.redis.keys("fm:registry:*") == []
    assert registry.blob_files() == []


async def test_published_model_downloads_byte_for_byte_with_its_record(
    registry: Any, make_model: ModelFactory
) -> None:
    tensors = make_model(1)

    version = await registry.client.publish_tensors("detector", tensors)
    payload = await registry.client.download("detector", 1)
    meta, loaded = await registry.client.download_tensors("detector")
    status = await registry.client.status()

    assert version.ref.name == "detector"
    assert version.ref.version == 1
    assert version.ref.digest == digest_tensors(tensors)
    assert version.size_bytes == len(encode(tensors))
    assert [t.name for t in version.manifest.tensors] == ["layer.bias", "layer.weight"]
    assert version.previous_digest == ""
    assert version.signer_key_id == status.signing_key_id
    assert len(version.signature) == 64
    assert payload == encode(tensors)
    assert meta.record_digest == version.record_digest
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert [p.name for p in registry.blob_files()] == [version.ref.digest]


async def test_each_version_links_the_previous_record_digest(
    registry: Any, make_model: ModelFactory
) -> None:
    first = await registry.client.publish_tensors("detector", make_model(1))
    second = await registry.client.publish_tensors("detector", make_model(2), parent_version=1)
    third = await registry.client.publish_tensors("detector", make_model(3), parent_version=2)

    chain = await registry.client.verify_chain("detector")

    assert [first.ref.version, second.ref.version, third.ref.version] == [1, 2, 3]
    assert second.previous_digest == first.record_digest
    assert third.previous_digest == second.record_digest
    assert (chain.versions_checked, chain.head_digest, chain.blobs_checked) == (
        3,
        third.record_digest,
        3,
    )


async def test_provenance_is_recorded(registry: Any, make_model: ModelFactory) -> None:
    token = await next_token(registry.redis)
    provenance = Provenance(
        run_id="run-7",
        round=3,
        rule=common_pb2.AGGREGATION_RULE_KRUM,
        participant_update_digests=(UPDATE_A, UPDATE_B),
        rejected={"node-9": "excluded by krum: score 41.2"},
        epsilon_spent=0.35,
        delta=1e-5,
    )

    version = await registry.client.publish_tensors(
        "detector", make_model(1), provenance=provenance, fencing_token=token
    )

    assert (version.run_id, version.round) == ("run-7", 3)
    assert version.rule == common_pb2.AGGREGATION_RULE_KRUM
    assert list(version.participant_update_digests) == [UPDATE_A, UPDATE_B]
    assert [(r.node_id, r.reason) for r in version.rejected] == [
        ("node-9", "excluded by krum: score 41.2")
    ]
    assert (version.epsilon_spent, version.delta) == (0.35, 1e-5)


async def test_a_retried_round_returns_the_same_version(
    registry: Any, make_model: ModelFactory
) -> None:
    token = await next_token(registry.redis)
    tensors = make_model(1)
    header = header_for(tensors, run_id="run-1", round=4, fencing_token=token)

    first = await registry.stub.PublishModel(iter(messages(header, encode(tensors))))
    retry = await registry.stub.PublishModel(iter(messages(header, encode(tensors))))
    page = await registry.client.list_versions("detector")

    assert (first.version.ref.version, first.duplicate) == (1, False)
    assert (retry.version.ref.version, retry.duplicate) == (1, True)
    assert retry.version.record_digest == first.version.record_digest
    assert [v.ref.version for v in page.versions] == [1]
    assert len(registry.blob_files()) == 1


async def test_a_different_model_for_a_published_round_is_already_exists(
    registry: Any, make_model: ModelFactory
) -> None:
    token = await next_token(registry.redis)
    run = Provenance(run_id="run-1", round=4)
    first = await registry.client.publish_tensors(
        "detector", make_model(1), provenance=run, fencing_token=token
    )
    other = make_model(2)

    with pytest.raises(AlreadyExists) as info:
        await registry.client.publish_tensors(
            "detector", other, provenance=run, fencing_token=token
        )

    assert str(info.value) == (
        f"round 4 of run run-1 was already published as version 1 of model 'detector' with "
        f"digest {first.ref.digest}; refusing a different model {digest_tensors(other)}"
    )
    listed = (await registry.client.list_versions("detector")).versions
    assert [v.ref.version for v in listed] == [1]
    assert [p.name for p in registry.blob_files()] == [first.ref.digest]


async def test_a_stale_fencing_token_is_refused_and_nothing_is_stored(
    registry: Any, make_model: ModelFactory
) -> None:
    stale = await next_token(registry.redis)
    await next_token(registry.redis)

    with pytest.raises(FailedPrecondition) as info:
        await registry.client.publish_tensors(
            "detector",
            make_model(1),
            provenance=Provenance(run_id="run-1", round=1),
            fencing_token=stale,
        )

    assert str(info.value) == (
        "publishing round 1 of run run-1 as model 'detector' refused: fencing token 1 is "
        "stale; the current leader holds 2"
    )
    await assert_nothing_stored(registry)


async def test_a_fencing_token_without_a_run_id_is_invalid(
    registry: Any, make_model: ModelFactory
) -> None:
    with pytest.raises(InvalidArgument) as info:
        await registry.client.publish_tensors("detector", make_model(1), fencing_token=3)

    assert str(info.value) == (
        "fencing token 3 given without a run id; a publish without a run id carries token 0"
    )
    await assert_nothing_stored(registry)


def _nan_model() -> dict[str, torch.Tensor]:
    tensors = {"w": torch.zeros(4, 4), "b": torch.zeros(4)}
    tensors["w"].view(-1)[6] = math.nan
    return tensors


def _transposed(tensors: dict[str, torch.Tensor]) -> pb.PublishHeader:
    header = header_for(tensors)
    spec = next(t for t in header.manifest.tensors if t.name == "layer.weight")
    spec.shape[:] = list(reversed(spec.shape))
    return header


def _payload(tensors: dict[str, torch.Tensor]) -> bytes:
    return encode(tensors)


Build = Callable[[dict[str, torch.Tensor]], list[pb.PublishModelRequest]]
BAD_PUBLISHES: list[tuple[str, Build, grpc.StatusCode, str]] = [
    (
        "no header",
        lambda t: messages(None, _payload(t)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "PublishModel starts with a header message; the first message was a chunk",
    ),
    (
        "empty stream",
        lambda t: [],
        grpc.StatusCode.INVALID_ARGUMENT,
        "PublishModel starts with a header message; the stream was empty",
    ),
    (
        "second header",
        lambda t: [
            *messages(header_for(t), _payload(t)[:8]),
            pb.PublishModelRequest(header=header_for(t)),
        ],
        grpc.StatusCode.INVALID_ARGUMENT,
        "PublishModel takes one header, first, then chunks; message 3 is not a chunk",
    ),
    (
        "bad name",
        lambda t: messages(header_for(t, name="no spaces"), _payload(t)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "model name 'no spaces' is invalid; expected 1-128 characters of letters, digits, '.', "
        "'_' or '-', starting with a letter or digit",
    ),
    (
        "bad digest",
        lambda t: messages(header_for(t, digest="abc"), _payload(t)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "digest 'abc' is not a SHA-256: expected 64 lowercase hex",
    ),
    (
        "empty manifest",
        lambda t: messages(header_for({}), b""),
        grpc.StatusCode.INVALID_ARGUMENT,
        "the manifest is empty; a model has at least one tensor",
    ),
    (
        "size not the manifest's",
        lambda t: messages(header_for(t, size_bytes=5), _payload(t)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "size_bytes 5 does not match the manifest, whose canonical payload has {size} bytes",
    ),
    (
        "manifest not the payload's",
        lambda t: messages(_transposed(t), _payload(t)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "the payload has tensor 'layer.weight' as float32[32, 64]; the manifest in the request "
        "header says float32[64, 32]",
    ),
    (
        "payload too short",
        lambda t: messages(header_for(t), _payload(t)[:-4]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "payload ended after {short} bytes; the request header announced {size}",
    ),
    (
        "payload too long",
        lambda t: messages(header_for(t), _payload(t) + b"\0" * 4),
        grpc.StatusCode.INVALID_ARGUMENT,
        "payload is longer than the {size} bytes announced in the request header",
    ),
    (
        "corrupted on the way",
        lambda t: messages(header_for(t), _payload(t)[:-1] + b"\x01"),
        grpc.StatusCode.DATA_LOSS,
        "payload hashes to {actual}; the request header says {digest}: it was corrupted on the "
        "way or the header is wrong",
    ),
    (
        "not finite",
        lambda t: messages(header_for(_nan_model()), _payload(_nan_model())),
        grpc.StatusCode.INVALID_ARGUMENT,
        "tensor 'w' holds NaN or Inf at element 6; a model's values must be finite",
    ),
    (
        "unknown parent",
        lambda t: messages(header_for(t, parent_version=4), _payload(t)),
        grpc.StatusCode.NOT_FOUND,
        "parent version 4 of model 'detector' does not exist; its latest version is 0",
    ),
    (
        "unknown rule",
        lambda t: messages(header_for(t, rule=99), _payload(t)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "aggregation rule 99 is not one of the contract's",
    ),
    (
        "round without run",
        lambda t: messages(header_for(t, round=2), _payload(t)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "round, participant update digests and rejected nodes need a run id; a publish without "
        "a run id (an initial model) carries none of them",
    ),
    (
        "bad participant digest",
        lambda t: messages(
            header_for(t, run_id="r", round=1, participant_update_digests=["xyz"]), _payload(t)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "participant update digest 'xyz' is not a SHA-256: expected 64 lowercase hex",
    ),
    (
        "negative epsilon",
        lambda t: messages(header_for(t, epsilon_spent=-1.0), _payload(t)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "epsilon_spent -1.0 is invalid; expected finite >= 0",
    ),
    (
        "delta of one",
        lambda t: messages(header_for(t, delta=1.0), _payload(t)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "delta 1.0 is invalid; expected within [0, 1)",
    ),
]


@pytest.mark.parametrize(
    ("build", "code", "message"),
    [case[1:] for case in BAD_PUBLISHES],
    ids=[case[0] for case in BAD_PUBLISHES],
)
async def test_bad_publish_is_refused_with_its_reason_and_stores_nothing(
    registry: Any,
    make_model: ModelFactory,
    build: Build,
    code: grpc.StatusCode,
    message: str,
) -> None:
    tensors = make_model(1)
    payload = _payload(tensors)
    expected = message.format(
        size=len(payload),
        short=len(payload) - 4,
        actual=hashlib.sha256(payload[:-1] + b"\x01").hexdigest(),
        digest=digest_tensors(tensors),
    )

    error = await refused(registry, build(tensors))

    assert error.code() == code
    assert error.details() == expected
    await assert_nothing_stored(registry)


async def test_a_model_over_the_size_limit_is_resource_exhausted(
    start_registry: Any, make_model: ModelFactory
) -> None:
    tensors = make_model(1)
    async with start_registry(max_model_bytes=1000) as registry:
        error = await refused(registry, messages(header_for(tensors), encode(tensors)))

        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.details() == (
            f"model of {len(encode(tensors))} bytes exceeds this registry's limit of 1000 bytes"
        )
        await assert_nothing_stored(registry)
