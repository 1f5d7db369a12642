"""UpdateIntake over a real Redis round and a real spool: accepted, duplicate, every rejection."""

import asyncio
import math
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis
import torch

from fedmesh.errors import (
    AlreadyExists,
    FailedPrecondition,
    FedmeshError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from fedmesh.services.aggregator.base_model import BaseManifests
from fedmesh.services.aggregator.metrics import AggregatorMetrics
from fedmesh.services.aggregator.nonces import UsedNonces
from fedmesh.services.aggregator.spool import SpoolKey, UpdateSpool
from fedmesh.services.aggregator.submission import UpdateIntake
from fedmesh.services.aggregator.update import ModelRef, UpdateHeader
from fedmesh.store import Phase, RoundStore
from fedmesh.tensors import Manifest, TensorSpec, encode

Tensors = dict[str, torch.Tensor]
HeaderFor = Callable[..., UpdateHeader]
ChunksOf = Callable[..., AsyncIterator[bytes]]


async def assert_nothing_stored(
    rounds: RoundStore, spool: UpdateSpool, header: UpdateHeader
) -> None:
    record = await rounds.get(header.run_id, header.round_no)
    assert dict(record.receipts) == {}
    assert spool.count == 0
    assert list((spool.root / "incoming").iterdir()) == []
    assert list((spool.root / "rounds").rglob("*.update")) == []


async def never_read() -> AsyncIterator[bytes]:
    raise AssertionError("the payload must not be read")
    yield b""  # pragma: no cover - makes this an async generator


async def test_a_valid_update_is_spooled_then_receipted(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    metrics: AggregatorMetrics,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
    chunks_of: ChunksOf,
) -> None:
    tensors = delta(1)
    payload = encode(tensors)
    header = header_for(tensors, local_loss=0.5, num_samples=12)

    outcome = await intake.submit(header, chunks_of(payload, 13))

    assert (outcome.digest, outcome.received_bytes, outcome.duplicate) == (
        header.digest,
        len(payload),
        False,
    )
    receipt = (await rounds.get(header.run_id, header.round_no)).receipts["n1"]
    assert (receipt.digest, receipt.num_samples, receipt.payload_bytes, receipt.local_loss) == (
        header.digest,
        12,
        len(payload),
        0.5,
    )
    key = SpoolKey(header.run_id, header.round_no, "n1", header.digest)
    assert spool.path_of(key).read_bytes() == payload
    assert metrics.rejected_total == 0
    assert metrics.received_bytes == len(payload)


async def test_the_same_update_again_is_acknowledged_without_reading_it(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
    chunks_of: ChunksOf,
) -> None:
    tensors = delta(1)
    header = header_for(tensors)
    first = await intake.submit(header, chunks_of(encode(tensors)))

    again = await intake.submit(header, never_read())

    assert again.duplicate is True
    assert (again.digest, again.received_bytes) == (first.digest, first.received_bytes)
    assert spool.count == 1
    assert (await rounds.get(header.run_id, header.round_no)).receipts["n1"].digest == first.digest


async def test_a_different_update_from_the_same_node_is_already_exists(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    metrics: AggregatorMetrics,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
    chunks_of: ChunksOf,
) -> None:
    first, second = delta(1), delta(2)
    await intake.submit(header_for(first), chunks_of(encode(first)))
    header = header_for(second)

    with pytest.raises(AlreadyExists) as info:
        await intake.submit(header, never_read())

    assert str(info.value) == (
        f"node 'n1' already submitted update {header_for(first).digest} for round 3 of run "
        f"run-1; refusing a different update {header.digest}"
    )
    assert spool.count == 1
    assert (await rounds.get("run-1", 3)).receipts["n1"].digest == header_for(first).digest
    assert metrics.rejected_for("already_exists") == 1


async def test_two_different_updates_racing_leave_one_receipt_and_one_file(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
    chunks_of: ChunksOf,
) -> None:
    first, second = delta(1), delta(2)

    outcomes = await asyncio.gather(
        intake.submit(header_for(first), chunks_of(encode(first))),
        intake.submit(header_for(second), chunks_of(encode(second))),
        return_exceptions=True,
    )

    assert sorted(type(o).__name__ for o in outcomes) == ["AlreadyExists", "SubmitOutcome"]
    winner = (await rounds.get("run-1", 3)).receipts["n1"].digest
    assert [key.digest for key in spool.spooled_keys()] == [winner]
    assert len(list((spool.root / "rounds").rglob("*.update"))) == 1


async def rejected(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    header: UpdateHeader,
    chunks: AsyncIterator[bytes],
    error: type[FedmeshError],
) -> str:
    with pytest.raises(error) as info:
        await intake.submit(header, chunks)
    await assert_nothing_stored(rounds, spool, header)
    return str(info.value)


async def test_an_unknown_round_is_not_found(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
) -> None:
    header = header_for(delta(1), round_no=9)

    with pytest.raises(NotFound, match=r"^round 9 of run run-1 does not exist$"):
        await intake.submit(header, never_read())
    assert spool.count == 0


async def test_a_round_that_is_not_collecting_is_failed_precondition(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    metrics: AggregatorMetrics,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
) -> None:
    await rounds.transition("run-1", 3, Phase.COLLECTING, Phase.AGGREGATING)
    header = header_for(delta(1))

    message = await rejected(intake, rounds, spool, header, never_read(), FailedPrecondition)

    assert message == "round 3 of run run-1 is AGGREGATING, not COLLECTING"
    assert metrics.rejected_for("failed_precondition") == 1


async def test_a_node_not_selected_is_failed_precondition(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
) -> None:
    header = header_for(delta(1), node="intruder")

    message = await rejected(intake, rounds, spool, header, never_read(), FailedPrecondition)

    assert message == "node 'intruder' was not selected for round 3 of run run-1"


async def test_a_delta_on_another_base_model_is_failed_precondition(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    base_ref: ModelRef,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
) -> None:
    stale = replace(base_ref, version=3, digest="0" * 64)
    header = header_for(delta(1), base_model=stale)

    message = await rejected(intake, rounds, spool, header, never_read(), FailedPrecondition)

    assert message == (
        f"the update is a delta on detector v3 (digest {'0' * 64}); round 3 of run run-1 "
        f"aggregates onto detector v4 (digest {base_ref.digest})"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"run_id": ""}, "header.run_id is empty; expected an id"),
        ({"node_id": "n" * 181}, "header.node_id has 181 bytes; expected at most 180"),
        ({"round_no": -1}, "header.round is -1; expected ≥ 0"),
        (
            {"digest": "ABC"},
            "header.digest 'ABC' is not a SHA-256 digest; expected 64 lowercase hex characters",
        ),
        ({"num_samples": 0}, "header.num_samples is 0; expected ≥ 1"),
        ({"local_loss": math.nan}, "header.local_loss is nan; expected a finite number"),
        ({"payload_bytes": 0}, "header.payload_bytes is 0; expected ≥ 1"),
    ],
)
async def test_a_malformed_header_is_invalid_argument(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    metrics: AggregatorMetrics,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
    changes: dict[str, Any],
    message: str,
) -> None:
    header = header_for(delta(1), **changes)

    with pytest.raises(InvalidArgument) as info:
        await intake.submit(header, never_read())

    assert str(info.value) == message
    assert spool.count == 0
    assert metrics.rejected_for("malformed_header") == 1


async def test_an_update_over_the_size_limit_is_resource_exhausted(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    metrics: AggregatorMetrics,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
) -> None:
    header = header_for(delta(1), payload_bytes=(1 << 20) + 1)

    message = await rejected(intake, rounds, spool, header, never_read(), ResourceExhausted)

    assert message == (
        "update of 1048577 bytes exceeds the aggregator's limit of 1048576 bytes "
        "(FEDMESH_AGGREGATOR_MAX_UPDATE_BYTES)"
    )
    assert metrics.rejected_for("resource_exhausted") == 1


async def test_a_manifest_with_a_wrong_shape_names_the_tensor(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
) -> None:
    tensors = delta(1)
    tensors["conv.weight"] = torch.zeros(4, 6)

    message = await rejected(
        intake, rounds, spool, header_for(tensors), never_read(), InvalidArgument
    )

    assert message == (
        "tensor 'conv.weight' of the header manifest is float32 [4, 6]; expected float32 [6, 4]"
    )


async def test_a_manifest_with_a_wrong_dtype_or_a_missing_tensor_is_refused(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
) -> None:
    wrong_dtype = delta(1)
    wrong_dtype["conv.bias"] = wrong_dtype["conv.bias"].double()
    missing = delta(1)
    del missing["head.weight"]

    first = await rejected(
        intake, rounds, spool, header_for(wrong_dtype), never_read(), InvalidArgument
    )
    second = await rejected(
        intake, rounds, spool, header_for(missing), never_read(), InvalidArgument
    )

    assert first == "tensor 'conv.bias' of the header manifest is float64 [6]; expected float32 [6]"
    assert second == (
        "tensor 'head.weight' is missing from the header manifest; expected float32 [1, 6]"
    )


async def test_payload_bytes_that_do_not_fit_the_manifest_are_refused(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
) -> None:
    tensors = delta(1)
    size = len(encode(tensors))
    header = header_for(tensors, payload_bytes=size + 4)

    message = await rejected(intake, rounds, spool, header, never_read(), InvalidArgument)

    assert message == (
        f"header.payload_bytes is {size + 4}; the canonical payload of the base model's "
        f"manifest has {size} bytes"
    )


async def test_a_digest_mismatch_is_invalid_argument(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    metrics: AggregatorMetrics,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
    chunks_of: ChunksOf,
) -> None:
    tensors = delta(1)
    header = header_for(tensors, digest="ab" * 32)

    message = await rejected(
        intake, rounds, spool, header, chunks_of(encode(tensors)), InvalidArgument
    )

    assert message.startswith("payload hashes to SHA-256 ")
    assert message.endswith(f"; the header announced {'ab' * 32}")
    assert metrics.rejected_for("digest_mismatch") == 1


@pytest.mark.parametrize(
    ("value", "shown"), [(math.nan, "NaN"), (math.inf, "inf"), (-math.inf, "-inf")]
)
async def test_a_non_finite_value_names_the_tensor_and_element(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    metrics: AggregatorMetrics,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
    chunks_of: ChunksOf,
    value: float,
    shown: str,
) -> None:
    tensors = delta(1)
    tensors["conv.weight"][2, 1] = value
    header = header_for(tensors)

    message = await rejected(
        intake, rounds, spool, header, chunks_of(encode(tensors), 7), InvalidArgument
    )

    assert message == f"tensor 'conv.weight' holds {shown} at element 9; every value must be finite"
    assert metrics.rejected_for("non_finite") == 1


async def test_a_truncated_or_overlong_payload_is_invalid_argument(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
    chunks_of: ChunksOf,
) -> None:
    tensors = delta(1)
    payload = encode(tensors)
    header = header_for(tensors)

    short = await rejected(intake, rounds, spool, header, chunks_of(payload[:-5]), InvalidArgument)
    long = await rejected(
        intake, rounds, spool, header, chunks_of(payload + b"\0" * 4), InvalidArgument
    )

    assert short == f"payload has {len(payload) - 5} bytes; the header announced {len(payload)}"
    assert long == f"payload goes past the {len(payload)} bytes announced in the header"


async def test_a_payload_whose_own_header_disagrees_names_the_tensor(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
    chunks_of: ChunksOf,
) -> None:
    tensors = delta(1)
    header = header_for(tensors)
    transposed = dict(tensors, **{"conv.weight": tensors["conv.weight"].T.contiguous()})

    message = await rejected(
        intake, rounds, spool, header, chunks_of(encode(transposed), 64), InvalidArgument
    )

    assert message == (
        "tensor 'conv.weight' of the payload header is float32 [4, 6]; expected float32 [6, 4]"
    )


async def test_a_payload_that_is_not_safetensors_is_invalid_argument(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
    chunks_of: ChunksOf,
) -> None:
    tensors = delta(1)
    header = header_for(tensors)
    garbage = struct.pack("<Q", 10) + b"not json!!" + b"\0" * (header.payload_bytes - 18)

    message = await rejected(intake, rounds, spool, header, chunks_of(garbage), InvalidArgument)

    assert message.startswith(
        "payload does not start with the canonical safetensors header of the manifest "
        "(safetensors header is not valid JSON"
    )


async def test_a_stream_cut_midway_leaves_nothing(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
) -> None:
    tensors = delta(1)
    payload = encode(tensors)

    async def cut() -> AsyncIterator[bytes]:
        yield payload[:100]
        raise ConnectionResetError("peer went away")

    with pytest.raises(ConnectionResetError):
        await intake.submit(header_for(tensors), cut())
    await assert_nothing_stored(rounds, spool, header_for(tensors))


async def test_the_base_manifest_is_fetched_once_per_version(
    redis_client: aioredis.Redis,
    rounds: RoundStore,
    spool: UpdateSpool,
    catalog: Any,
    metrics: AggregatorMetrics,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
    chunks_of: ChunksOf,
) -> None:
    intake = UpdateIntake(
        rounds, spool, BaseManifests(catalog), metrics, 1 << 20, UsedNonces(redis_client)
    )
    updates = {node: delta(seed) for seed, node in enumerate(("n1", "n2", "n3"))}

    await asyncio.gather(
        *(
            intake.submit(header_for(tensors, node=node), chunks_of(encode(tensors)))
            for node, tensors in updates.items()
        )
    )

    assert catalog.calls == 1
    assert len((await rounds.get("run-1", 3)).receipts) == 3


async def test_a_base_model_unknown_to_the_registry_is_reported_and_not_cached(
    redis_client: aioredis.Redis,
    rounds: RoundStore,
    spool: UpdateSpool,
    catalog: Any,
    metrics: AggregatorMetrics,
    base_model: Tensors,
    base_ref: ModelRef,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
    chunks_of: ChunksOf,
) -> None:
    published = catalog.published.pop((base_ref.name, base_ref.version))
    intake = UpdateIntake(
        rounds, spool, BaseManifests(catalog), metrics, 1 << 20, UsedNonces(redis_client)
    )
    tensors = delta(1)

    with pytest.raises(NotFound, match=r"^model detector v4 does not exist$"):
        await intake.submit(header_for(tensors), never_read())
    catalog.published[(base_ref.name, base_ref.version)] = published
    outcome = await intake.submit(header_for(tensors), chunks_of(encode(tensors)))

    assert outcome.duplicate is False
    assert catalog.calls == 2


async def test_a_base_model_that_is_not_float32_is_failed_precondition(
    redis_client: aioredis.Redis,
    rounds: RoundStore,
    spool: UpdateSpool,
    catalog: Any,
    metrics: AggregatorMetrics,
    base_ref: ModelRef,
    delta: Callable[[int], Tensors],
    header_for: HeaderFor,
) -> None:
    published = catalog.published[(base_ref.name, base_ref.version)]
    specs = [*published.manifest.tensors, TensorSpec("steps", "int64", ())]
    catalog.published[(base_ref.name, base_ref.version)] = replace(
        published, manifest=Manifest.of(specs)
    )
    intake = UpdateIntake(
        rounds, spool, BaseManifests(catalog), metrics, 1 << 20, UsedNonces(redis_client)
    )

    message = await rejected(
        intake, rounds, spool, header_for(delta(1)), never_read(), FailedPrecondition
    )

    assert message == (
        f"base model {base_ref} has tensor 'steps' of dtype int64; the aggregator averages "
        "float32 models only"
    )
