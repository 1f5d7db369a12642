"""UpdateIntake refuses updates that are unsigned, signed by another key, or replay a nonce.

Each refusal has its exact status and message, stores nothing (no spool file, no
receipt, no nonce) and is counted under its reason; the same signed update sent
again is still idempotent.
"""

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest
import redis.asyncio as aioredis
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedmesh.client.signing import NodeSigner, update_message
from fedmesh.errors import FailedPrecondition, InvalidArgument, Unauthenticated
from fedmesh.services.aggregator.metrics import AggregatorMetrics
from fedmesh.services.aggregator.spool import UpdateSpool
from fedmesh.services.aggregator.submission import UpdateIntake
from fedmesh.services.aggregator.update import ModelRef, UpdateHeader
from fedmesh.store import Phase, RoundStore
from fedmesh.tensors import encode

from .conftest import RUN, SIGNERS, signing_keys_field

Tensors = dict[str, torch.Tensor]
HeaderFor = Callable[..., UpdateHeader]
ChunksOf = Callable[..., AsyncIterator[bytes]]


async def never_read() -> AsyncIterator[bytes]:
    raise AssertionError("the payload must not be read")
    yield b""  # pragma: no cover - makes this an async generator


async def assert_nothing_stored(
    redis: aioredis.Redis, rounds: RoundStore, spool: UpdateSpool, round_no: int = 3
) -> None:
    assert dict((await rounds.get(RUN, round_no)).receipts) == {}
    assert spool.count == 0
    assert list((spool.root / "incoming").iterdir()) == []
    assert await redis.keys("*nonces*") == []


async def open_round(rounds: RoundStore, base_ref: ModelRef, round_no: int, keys: str) -> None:
    fields = {"base_model": json.dumps(base_ref.__dict__), "signing_keys": keys}
    await rounds.create(RUN, round_no, ["n1"], 10**13, 1, fields)
    await rounds.transition(RUN, round_no, Phase.PENDING, Phase.COLLECTING)


async def test_an_unsigned_update_is_unauthenticated(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    metrics: AggregatorMetrics,
    redis_client: aioredis.Redis,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
) -> None:
    header = header_for(delta(1), signature=b"", nonce=b"")

    with pytest.raises(Unauthenticated) as refused:
        await intake.submit(header, never_read())

    assert str(refused.value) == (
        "header.signature is empty; node 'n1' must sign its update with the Ed25519 key it "
        "registered with the coordinator"
    )
    await assert_nothing_stored(redis_client, rounds, spool)
    assert metrics.rejected_for("unsigned") == 1


def signed_by_another_key(header: UpdateHeader) -> UpdateHeader:
    forged = NodeSigner.generate().sign_update(RUN, 3, "n1", header.digest)
    return replace(header, nonce=forged.nonce, signature=forged.signature)


def signed_for_another_round(header: UpdateHeader) -> UpdateHeader:
    other = SIGNERS["n1"].sign_update(RUN, 2, "n1", header.digest)
    return replace(header, nonce=other.nonce, signature=other.signature)


def signed_as_another_node(header: UpdateHeader) -> UpdateHeader:
    other = SIGNERS["n1"].sign_update(RUN, 3, "n2", header.digest)
    return replace(header, nonce=other.nonce, signature=other.signature)


def with_another_nonce(header: UpdateHeader) -> UpdateHeader:
    return replace(header, nonce=bytes(16))


def with_another_digest(header: UpdateHeader) -> UpdateHeader:
    return replace(header, digest="ab" * 32)


@pytest.mark.parametrize(
    "tamper",
    [
        signed_by_another_key,
        signed_for_another_round,
        signed_as_another_node,
        with_another_nonce,
        with_another_digest,
    ],
)
async def test_a_signature_that_does_not_cover_this_update_is_unauthenticated(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    metrics: AggregatorMetrics,
    redis_client: aioredis.Redis,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
    tamper: Callable[[UpdateHeader], UpdateHeader],
) -> None:
    header = tamper(header_for(delta(1)))

    with pytest.raises(Unauthenticated) as refused:
        await intake.submit(header, never_read())

    assert str(refused.value) == (
        "header.signature does not verify with the Ed25519 key node 'n1' registered (over run, "
        f"round, node, nonce and digest {header.digest}); refusing the update"
    )
    await assert_nothing_stored(redis_client, rounds, spool)
    assert metrics.rejected_for("bad_signature") == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"signature": bytes(63)},
            "header.signature has 63 bytes; expected a 64-byte Ed25519 signature",
        ),
        (
            {"nonce": bytes(15)},
            "header.nonce has 15 bytes; expected 16–64 random bytes, fresh for every update",
        ),
        (
            {"nonce": bytes(65)},
            "header.nonce has 65 bytes; expected 16–64 random bytes, fresh for every update",
        ),
    ],
)
async def test_a_malformed_signature_or_nonce_is_invalid_argument(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    metrics: AggregatorMetrics,
    redis_client: aioredis.Redis,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
    changes: dict[str, bytes],
    message: str,
) -> None:
    header = header_for(delta(1), **changes)

    with pytest.raises(InvalidArgument) as refused:
        await intake.submit(header, never_read())

    assert str(refused.value) == message
    await assert_nothing_stored(redis_client, rounds, spool)
    assert metrics.rejected_for("malformed_header") == 1


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            None,
            "round 4 of run run-1 has no signing key recorded for node 'n1' (round field "
            "signing_keys); the coordinator writes the participants' keys when it opens a "
            "round, so its updates cannot be verified",
        ),
        (
            signing_keys_field(("n2",)),
            "round 4 of run run-1 has no signing key recorded for node 'n1' (round field "
            "signing_keys); the coordinator writes the participants' keys when it opens a "
            "round, so its updates cannot be verified",
        ),
        (
            '{"n1": "not hex"}',
            "round 4 of run run-1 has a malformed signing_keys field; expected JSON node id → "
            "hex key",
        ),
    ],
    ids=["no keys", "another node's key only", "not hex"],
)
async def test_a_round_without_the_nodes_key_is_failed_precondition(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    redis_client: aioredis.Redis,
    base_ref: ModelRef,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
    keys: str | None,
    message: str,
) -> None:
    fields = {"base_model": json.dumps(base_ref.__dict__)}
    if keys is not None:
        fields["signing_keys"] = keys
    await rounds.create(RUN, 4, ["n1"], 10**13, 1, fields)
    await rounds.transition(RUN, 4, Phase.PENDING, Phase.COLLECTING)

    with pytest.raises(FailedPrecondition) as refused:
        await intake.submit(header_for(delta(1), round_no=4), never_read())

    assert str(refused.value) == message
    await assert_nothing_stored(redis_client, rounds, spool, round_no=4)


def signed_with(key: Ed25519PrivateKey, round_no: int, nonce: bytes, digest: str) -> bytes:
    return key.sign(update_message(RUN, round_no, "n1", nonce, digest))


async def test_a_nonce_used_in_an_earlier_round_is_refused_as_a_replay(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    metrics: AggregatorMetrics,
    redis_client: aioredis.Redis,
    base_ref: ModelRef,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
    chunks_of: ChunksOf,
) -> None:
    key = Ed25519PrivateKey.generate()
    keys = json.dumps({"n1": NodeSigner(key).public_key.hex()})
    await open_round(rounds, base_ref, 4, keys)
    await open_round(rounds, base_ref, 5, keys)
    nonce = bytes(range(16))
    first, second = delta(1), delta(2)
    earlier = header_for(first, round_no=4, nonce=nonce, signature=b"")
    earlier = replace(earlier, signature=signed_with(key, 4, nonce, earlier.digest))
    await intake.submit(earlier, chunks_of(encode(first)))
    replayed = header_for(second, round_no=5, nonce=nonce, signature=b"")
    replayed = replace(replayed, signature=signed_with(key, 5, nonce, replayed.digest))

    with pytest.raises(Unauthenticated) as refused:
        await intake.submit(replayed, never_read())

    assert str(refused.value) == (
        f"header.nonce was already used by node 'n1' in run run-1 for update {earlier.digest} "
        "of round 4; every update needs a fresh nonce"
    )
    assert dict((await rounds.get(RUN, 5)).receipts) == {}
    assert spool.count == 1
    assert await redis_client.hgetall("fm:{run:run-1}:nonces:n1") == {
        nonce.hex(): f"4:{earlier.digest}"
    }
    assert metrics.rejected_for("replayed_nonce") == 1


async def test_the_same_signed_update_sent_again_is_not_a_replay(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    redis_client: aioredis.Redis,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
    chunks_of: ChunksOf,
) -> None:
    tensors = delta(1)
    header = header_for(tensors)
    await intake.submit(header, chunks_of(encode(tensors)))

    duplicate = await intake.submit(header, never_read())
    # A restarted aggregator drops a receipt whose data was lost; the node retries the same
    # signed update, whose nonce is already bound to it.
    await rounds.drop_receipt(RUN, 3, "n1")
    retried = await intake.submit(header, chunks_of(encode(tensors)))

    assert duplicate.duplicate is True
    assert retried.duplicate is False
    assert (await rounds.get(RUN, 3)).receipts["n1"].digest == header.digest
    assert await redis_client.hgetall("fm:{run:run-1}:nonces:n1") == {
        header.nonce.hex(): f"3:{header.digest}"
    }


async def test_an_upload_cut_midway_binds_no_nonce_and_its_retry_is_accepted(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    redis_client: aioredis.Redis,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
    chunks_of: ChunksOf,
) -> None:
    tensors = delta(1)
    payload = encode(tensors)
    header = header_for(tensors)

    async def cut() -> AsyncIterator[bytes]:
        yield payload[:100]
        raise ConnectionResetError("peer went away")

    with pytest.raises(ConnectionResetError):
        await intake.submit(header, cut())
    await assert_nothing_stored(redis_client, rounds, spool)
    outcome = await intake.submit(header, chunks_of(payload))

    assert outcome.duplicate is False
    assert (await rounds.get(RUN, 3)).receipts["n1"].digest == header.digest
