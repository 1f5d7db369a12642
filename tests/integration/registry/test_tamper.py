"""Tampering with a record or a blob is found, reported as DATA_LOSS naming the version, alerted."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import grpc
import pytest
import torch

from fedmesh.errors import DataLoss
from fedmesh.proto.alerting.v1 import alerting_pb2
from fedmesh.proto.registry.v1 import registry_pb2 as pb
from fedmesh.services.registry import keys
from fedmesh.store import free_port

ModelFactory = Callable[..., dict[str, torch.Tensor]]


async def publish_three(registry: Any, make_model: ModelFactory) -> list[Any]:
    return [await registry.client.publish_tensors("detector", make_model(i)) for i in (1, 2, 3)]


async def rewrite_record(
    registry: Any, version: int, change: Callable[[dict[str, Any]], None]
) -> None:
    key = keys.records_key("detector")
    stored = json.loads(await registry.redis.hget(key, str(version)))
    change(stored)
    await registry.redis.hset(key, str(version), json.dumps(stored))


def edit_round(stored: dict[str, Any]) -> None:
    stored["record"] = stored["record"].replace('"round":0', '"round":9')


def edit_round_and_digest(stored: dict[str, Any]) -> None:
    edit_round(stored)
    stored["record_digest"] = hashlib.sha256(stored["record"].encode()).hexdigest()


async def test_an_altered_record_is_data_loss_naming_the_version_and_raises_an_alert(
    start_registry: Any, make_model: ModelFactory, alert_sink: Any
) -> None:
    sink, alerting_address = alert_sink
    async with start_registry(alerting_address=alerting_address) as registry:
        versions = await publish_three(registry, make_model)
        await rewrite_record(registry, 2, edit_round)

        with pytest.raises(DataLoss) as verify:
            await registry.client.verify_chain("detector")
        with pytest.raises(DataLoss) as read:
            await registry.client.get_version("detector", 2)

    message = str(verify.value)
    assert message.startswith("record of version 2 of model 'detector' was altered:")
    assert message.endswith(f"the stored record digest is {versions[1].record_digest}")
    assert str(read.value) == message
    assert len(sink.events) == 2
    event = sink.events[0]
    assert event.kind == "model_tampered"
    assert event.source == "registry"
    assert dict(event.labels) == {"model": "detector", "version": "2"}
    assert event.severity == alerting_pb2.SEVERITY_CRITICAL
    assert event.annotations["summary"] == message


async def test_a_record_with_a_recomputed_digest_fails_the_signature(
    registry: Any, make_model: ModelFactory
) -> None:
    await publish_three(registry, make_model)
    await rewrite_record(registry, 1, edit_round_and_digest)
    key_id = (await registry.client.status()).signing_key_id

    with pytest.raises(DataLoss) as info:
        await registry.client.verify_chain("detector")

    assert str(info.value) == (
        "record of version 1 of model 'detector' does not carry a valid signature of this "
        f"registry's key {key_id}"
    )


async def test_a_missing_record_breaks_the_chain(registry: Any, make_model: ModelFactory) -> None:
    await publish_three(registry, make_model)
    await registry.redis.hdel(keys.records_key("detector"), "2")

    with pytest.raises(DataLoss, match=r"^record of version 2 of model 'detector' is missing$"):
        await registry.client.verify_chain("detector")


async def test_a_moved_head_pointer_breaks_the_chain(
    registry: Any, make_model: ModelFactory
) -> None:
    versions = await publish_three(registry, make_model)
    await registry.redis.hset(keys.head_key("detector"), "head_digest", "f" * 64)

    with pytest.raises(DataLoss) as info:
        await registry.client.verify_chain("detector")

    assert str(info.value) == (
        "the chain of model 'detector' is broken at version 3: the version after it (or the "
        f"head) links to record {'f' * 64}, but version 3's record digest is "
        f"{versions[2].record_digest}"
    )


async def test_an_altered_blob_is_data_loss_on_verify_and_on_download(
    registry: Any, make_model: ModelFactory
) -> None:
    versions = await publish_three(registry, make_model)
    blob = registry.settings.blob_dir / versions[0].ref.digest[:2] / versions[0].ref.digest
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))

    with pytest.raises(DataLoss) as verify:
        await registry.client.verify_chain("detector")
    with pytest.raises(DataLoss) as download:
        await registry.client.download("detector", 1)
    with pytest.raises(DataLoss) as tail:
        await registry.client.download("detector", 1, offset=100)

    assert str(verify.value) == (
        f"blob of version 1 of model 'detector' was altered: it hashes to "
        f"{hashlib.sha256(bytes(data)).hexdigest()}, the record says {versions[0].ref.digest}"
    )
    expected = (
        "blob of version 1 of model 'detector' was altered: it does not hash to the record's "
        f"digest {versions[0].ref.digest}"
    )
    assert str(download.value) == expected
    assert str(tail.value) == expected


async def test_a_missing_blob_is_data_loss(registry: Any, make_model: ModelFactory) -> None:
    versions = await publish_three(registry, make_model)
    digest = versions[2].ref.digest
    (registry.settings.blob_dir / digest[:2] / digest).unlink()

    with pytest.raises(DataLoss) as info:
        await registry.client.verify_chain("detector")

    assert str(info.value) == (
        f"blob {digest} of version 3 of model 'detector' is missing from the blob store"
    )


async def test_verify_reports_data_loss_even_when_alerting_is_down(
    start_registry: Any, make_model: ModelFactory
) -> None:
    async with start_registry(
        alerting_address=f"127.0.0.1:{free_port()}", alert_timeout_s=0.5
    ) as registry:
        await publish_three(registry, make_model)
        await rewrite_record(registry, 3, edit_round)

        with pytest.raises(DataLoss, match=r"^record of version 3 of model 'detector' was altered"):
            await registry.client.verify_chain("detector")


async def test_verifying_an_earlier_version_checks_only_up_to_it(
    registry: Any, make_model: ModelFactory
) -> None:
    versions = await publish_three(registry, make_model)
    await rewrite_record(registry, 3, edit_round)

    report = await registry.client.verify_chain("detector", 2)

    assert (report.versions_checked, report.head_digest) == (2, versions[1].record_digest)


async def test_verify_of_a_version_past_the_head_is_not_found(
    registry: Any, make_model: ModelFactory
) -> None:
    await publish_three(registry, make_model)

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await registry.stub.VerifyChain(pb.VerifyChainRequest(name="detector", version=9))

    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "model 'detector' has no version 9; its latest is 3"
