"""The coordinator's ports implemented over gRPC: aggregator and registry."""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from fedmesh.errors import Aborted, FailedPrecondition, NotFound, Unavailable
from fedmesh.proto.aggregator.v1 import aggregator_pb2 as agg_pb
from fedmesh.proto.aggregator.v1 import aggregator_pb2_grpc as agg_grpc
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.proto.registry.v1 import registry_pb2 as reg_pb
from fedmesh.proto.registry.v1 import registry_pb2_grpc as reg_grpc
from fedmesh.services.coordinator import convert
from fedmesh.services.coordinator.ports import AggregateOutcome, Evaluation, Verdict
from fedmesh.services.coordinator.runs import ModelRef
from fedmesh.services.coordinator.spec import RunSpec

_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def _domain_error(exc: grpc.aio.AioRpcError, what: str) -> Exception:
    message = f"{what}: {exc.details()}"
    if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(message)
    if exc.code() == grpc.StatusCode.NOT_FOUND:
        return NotFound(message)
    if exc.code() in _RETRYABLE:
        return Unavailable(message)
    return Aborted(message)


class GrpcAggregation:
    """AggregateRound on the aggregator service."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float) -> None:
        self._stub = agg_grpc.AggregatorServiceStub(channel)
        self._timeout_s = timeout_s

    async def aggregate_round(
        self,
        run_id: str,
        round_no: int,
        fencing_token: int,
        spec: RunSpec,
        base_model: ModelRef,
        trace_carrier: Mapping[str, str],
    ) -> AggregateOutcome:
        """Ask the aggregator to aggregate and publish the round."""
        wire = convert.spec_to_proto(spec)
        request = agg_pb.AggregateRoundRequest(
            run_id=run_id,
            round=round_no,
            fencing_token=fencing_token,
            aggregation=wire.aggregation,
            base_model=convert.model_to_proto(base_model),
            privacy=wire.privacy,
            trace_context=common.TraceContext(carrier=dict(trace_carrier)),
        )
        try:
            response = await self._stub.AggregateRound(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _domain_error(exc, f"aggregating round {round_no} of {run_id}") from None
        return AggregateOutcome(
            model=convert.model_from_proto(response.model),
            verdicts=[
                Verdict(e.node_id, e.excluded, e.reason, e.score if e.has_score else None)
                for e in response.evidence
            ],
            mean_local_loss=response.mean_local_loss,
            epsilon_spent=response.epsilon_spent,
        )


class GrpcModelCatalog:
    """Latest versions and evaluation records on the registry service."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float = 10.0) -> None:
        self._stub = reg_grpc.RegistryServiceStub(channel)
        self._timeout_s = timeout_s

    async def latest(self, name: str) -> ModelRef | None:
        """The newest version of ``name``, or None."""
        try:
            response = await self._stub.GetModelVersion(
                reg_pb.GetModelVersionRequest(name=name), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _domain_error(exc, f"looking up model {name!r}") from None
        return convert.model_from_proto(response.version.ref)

    async def record_evaluation(self, model: ModelRef, evaluation: Evaluation) -> None:
        """Store combined metrics on the version."""
        try:
            await self._stub.RecordEvaluation(
                reg_pb.RecordEvaluationRequest(
                    name=model.name,
                    version=model.version,
                    metrics=convert.evaluation_to_proto(evaluation),
                ),
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            raise _domain_error(
                exc, f"recording evaluation of {model.name} v{model.version}"
            ) from None
