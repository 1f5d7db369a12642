"""Evaluations, the production gate, rollback, and the alias history."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import grpc
import pytest
import torch

from fedmesh.errors import FailedPrecondition
from fedmesh.proto.common.v1 import common_pb2
from fedmesh.proto.registry.v1 import registry_pb2 as pb

ModelFactory = Callable[..., dict[str, torch.Tensor]]


def metrics(macro_f1: float, **changes: Any) -> common_pb2.EvaluationMetrics:
    fields: dict[str, Any] = {
        "loss": 0.3,
        "macro_f1": macro_f1,
        "pr_auc": 0.7,
        "samples": 1200,
        "reporters": 6,
    }
    fields.update(changes)
    return common_pb2.EvaluationMetrics(**fields)


async def evaluated(registry: Any, make_model: ModelFactory, scores: list[float]) -> None:
    for version, score in enumerate(scores, start=1):
        await registry.client.publish_tensors("detector", make_model(version))
        await registry.client.record_evaluation("detector", version, metrics(score))


async def test_a_version_without_evaluation_cannot_become_production(
    registry: Any, make_model: ModelFactory
) -> None:
    await registry.client.publish_tensors("detector", make_model(1))

    with pytest.raises(FailedPrecondition) as info:
        await registry.client.promote("detector", 1)

    assert str(info.value) == (
        "version 1 of model 'detector' has no evaluation; record one (RecordEvaluation) "
        "before promoting it to production"
    )
    assert list((await registry.client.get_version("detector", 1)).aliases) == []
    assert await registry.client.alias_moves("detector") == []


async def test_the_gate_refuses_a_worse_model_with_the_numbers(
    registry: Any, make_model: ModelFactory
) -> None:
    await evaluated(registry, make_model, [0.80, 0.75])
    await registry.client.promote("detector", 1)

    with pytest.raises(FailedPrecondition) as info:
        await registry.client.promote("detector", 2)

    assert str(info.value) == (
        "version 2 of model 'detector' has macro-F1 0.7500; production (version 1) has 0.8000; "
        "the gate allows at most 0.0200 worse, i.e. at least 0.7800"
    )
    assert (await registry.client.get_version("detector", alias="production")).ref.version == 1
    assert len(await registry.client.alias_moves("detector")) == 1


async def test_the_gate_passes_a_model_within_the_margin(
    registry: Any, make_model: ModelFactory
) -> None:
    await evaluated(registry, make_model, [0.80, 0.78])
    await registry.client.promote("detector", 1)

    promoted = await registry.client.promote("detector", 2, reason="round 12 result")

    assert list(promoted.aliases) == ["production"]
    assert promoted.evaluation.macro_f1 == 0.78
    assert list((await registry.client.get_version("detector", 1)).aliases) == []


async def test_the_margin_comes_from_the_settings(
    start_registry: Any, make_model: ModelFactory
) -> None:
    async with start_registry(promotion_margin=0.1) as registry:
        await evaluated(registry, make_model, [0.80, 0.75])
        await registry.client.promote("detector", 1)

        promoted = await registry.client.promote("detector", 2)

    assert list(promoted.aliases) == ["production"]


async def test_candidate_takes_any_version_without_a_gate(
    registry: Any, make_model: ModelFactory
) -> None:
    await registry.client.publish_tensors("detector", make_model(1))

    promoted = await registry.client.promote("detector", 1, alias="candidate")

    assert list(promoted.aliases) == ["candidate"]


async def test_promoting_the_version_an_alias_holds_records_no_move(
    registry: Any, make_model: ModelFactory
) -> None:
    await evaluated(registry, make_model, [0.8])
    await registry.client.promote("detector", 1)

    await registry.client.promote("detector", 1)

    assert len(await registry.client.alias_moves("detector")) == 1


async def test_rollback_moves_production_to_a_named_earlier_version(
    registry: Any, make_model: ModelFactory
) -> None:
    await evaluated(registry, make_model, [0.80, 0.81, 0.82])
    for version in (1, 2, 3):
        await registry.client.promote("detector", version)

    rolled = await registry.client.rollback("detector", 1, reason="false alarms")

    assert rolled.ref.version == 1
    assert list(rolled.aliases) == ["production"]
    assert (await registry.client.get_version("detector", alias="production")).ref.version == 1


async def test_rollback_without_a_version_goes_to_the_previous_production(
    registry: Any, make_model: ModelFactory
) -> None:
    await evaluated(registry, make_model, [0.80, 0.81, 0.82])
    for version in (1, 2, 3):
        await registry.client.promote("detector", version)

    first = await registry.client.rollback("detector")
    second = await registry.client.rollback("detector")

    assert (first.ref.version, second.ref.version) == (2, 1)
    with pytest.raises(FailedPrecondition) as info:
        await registry.client.rollback("detector")
    assert str(info.value) == (
        "production of model 'detector' has held no version earlier than 1; name the version "
        "to roll back to"
    )


async def test_rollback_refuses_a_version_that_is_not_earlier(
    registry: Any, make_model: ModelFactory
) -> None:
    await evaluated(registry, make_model, [0.80, 0.81])
    await registry.client.promote("detector", 1)

    with pytest.raises(FailedPrecondition) as info:
        await registry.client.rollback("detector", 2)

    assert str(info.value) == (
        "rollback moves production back to an earlier version; production of model "
        "'detector' is version 1, and 2 is not earlier (promote it instead)"
    )
    assert (await registry.client.get_version("detector", alias="production")).ref.version == 1


async def test_rollback_without_production_is_refused(
    registry: Any, make_model: ModelFactory
) -> None:
    await registry.client.publish_tensors("detector", make_model(1))

    with pytest.raises(FailedPrecondition, match=r"^model 'detector' has no production version"):
        await registry.client.rollback("detector")


async def test_every_alias_move_is_recorded_newest_first(
    registry: Any, make_model: ModelFactory
) -> None:
    await evaluated(registry, make_model, [0.80, 0.81])
    await registry.client.promote("detector", 2, alias="candidate", reason="try it")
    await registry.client.promote("detector", 1, reason="first")
    await registry.client.promote("detector", 2, reason="better")
    await registry.client.rollback("detector", 1, reason="alarms")

    moves = await registry.client.alias_moves("detector")
    production = await registry.client.alias_moves("detector", alias="production")

    assert [(m.alias, m.from_version, m.to_version, m.action, m.reason) for m in moves] == [
        ("production", 2, 1, pb.ALIAS_ACTION_ROLLBACK, "alarms"),
        ("production", 1, 2, pb.ALIAS_ACTION_PROMOTE, "better"),
        ("production", 0, 1, pb.ALIAS_ACTION_PROMOTE, "first"),
        ("candidate", 0, 2, pb.ALIAS_ACTION_PROMOTE, "try it"),
    ]
    assert all(m.moved_unix_ms > 0 for m in moves)
    assert [m.to_version for m in production] == [1, 2, 1]


@pytest.mark.parametrize(
    ("request_message", "message"),
    [
        (
            pb.RecordEvaluationRequest(name="detector", version=1, metrics=metrics(1.5)),
            "evaluation macro_f1 is 1.5; expected within [0, 1]",
        ),
        (
            pb.RecordEvaluationRequest(name="detector", version=1, metrics=metrics(math.nan)),
            "evaluation macro_f1 is nan; expected a finite number",
        ),
        (
            pb.RecordEvaluationRequest(name="detector", version=1, metrics=metrics(0.5, loss=-1)),
            "evaluation loss is -1.0; expected >= 0",
        ),
        (
            pb.RecordEvaluationRequest(name="detector", version=1, metrics=metrics(0.5, samples=0)),
            "evaluation samples is 0; expected >= 1",
        ),
        (
            pb.RecordEvaluationRequest(name="detector", version=1),
            "metrics are required",
        ),
        (
            pb.RecordEvaluationRequest(name="detector", version=0, metrics=metrics(0.5)),
            "recording an evaluation names a version; got 0",
        ),
    ],
)
async def test_bad_evaluations_are_refused_and_change_nothing(
    registry: Any,
    make_model: ModelFactory,
    request_message: pb.RecordEvaluationRequest,
    message: str,
) -> None:
    await registry.client.publish_tensors("detector", make_model(1))

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await registry.stub.RecordEvaluation(request_message)

    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == message
    assert not (await registry.client.get_version("detector", 1)).HasField("evaluation")


@pytest.mark.parametrize(
    ("request_message", "code", "message"),
    [
        (
            pb.PromoteModelRequest(name="detector", version=1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "alias is required (e.g. 'production' or 'candidate')",
        ),
        (
            pb.PromoteModelRequest(name="detector", version=0, alias="candidate"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "promoting to 'candidate' names a version; got 0",
        ),
        (
            pb.PromoteModelRequest(name="detector", version=5, alias="candidate"),
            grpc.StatusCode.NOT_FOUND,
            "model 'detector' has no version 5; its latest is 1",
        ),
        (
            pb.PromoteModelRequest(
                name="detector", version=1, alias="candidate", reason="x" * 2000
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "reason has 2000 characters; expected at most 1024",
        ),
    ],
)
async def test_bad_promotions_are_refused_and_move_nothing(
    registry: Any,
    make_model: ModelFactory,
    request_message: pb.PromoteModelRequest,
    code: grpc.StatusCode,
    message: str,
) -> None:
    await registry.client.publish_tensors("detector", make_model(1))

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await registry.stub.PromoteModel(request_message)

    assert info.value.code() == code
    assert info.value.details() == message
    assert await registry.client.alias_moves("detector") == []
