"""The aggregator's RPC edge: translate, validate the stream's framing, delegate."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from fedmesh.errors import FedmeshError
from fedmesh.proto.aggregator.v1 import aggregator_pb2 as pb
from fedmesh.proto.aggregator.v1 import aggregator_pb2_grpc as pb_grpc
from fedmesh.rpc import translate_errors
from fedmesh.services.aggregator import convert
from fedmesh.services.aggregator.metrics import AggregatorMetrics
from fedmesh.services.aggregator.round_aggregation import AggregationRequest, RoundAggregator
from fedmesh.services.aggregator.spool import UpdateSpool
from fedmesh.services.aggregator.submission import UpdateIntake
from fedmesh.services.aggregator.validation import InvalidUpdate
from fedmesh.telemetry import context_from_carrier, tracer

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AggregatorService"].full_name
_tracer = tracer(__name__)


async def _read_header(requests: AsyncIterator[pb.SubmitUpdateRequest]) -> pb.UpdateHeader:
    try:
        first = await anext(requests)
    except StopAsyncIteration:
        raise InvalidUpdate(
            "malformed_stream", "SubmitUpdate stream is empty; expected a header, then chunks"
        ) from None
    if first.WhichOneof("item") != "header":
        raise InvalidUpdate(
            "malformed_stream", "SubmitUpdate stream starts with a chunk; expected the header first"
        )
    return first.header


async def _chunks(requests: AsyncIterator[pb.SubmitUpdateRequest]) -> AsyncIterator[bytes]:
    async for request in requests:
        if request.WhichOneof("item") != "chunk":
            raise InvalidUpdate(
                "malformed_stream",
                "SubmitUpdate stream carries a second header; expected only chunks after the first",
            )
        yield request.chunk


class AggregatorServicer(pb_grpc.AggregatorServiceServicer):
    """SubmitUpdate, AggregateRound and GetStatus over the domain objects."""

    def __init__(
        self,
        intake: UpdateIntake,
        aggregator: RoundAggregator,
        spool: UpdateSpool,
        metrics: AggregatorMetrics,
    ) -> None:
        self._intake = intake
        self._aggregator = aggregator
        self._spool = spool
        self._metrics = metrics

    @translate_errors
    async def SubmitUpdate(
        self, request_iterator: AsyncIterable[pb.SubmitUpdateRequest], context: object
    ) -> pb.SubmitUpdateResponse:
        """Receive one update: header first, then the payload's chunks."""
        requests = aiter(request_iterator)
        try:
            wire = await _read_header(requests)
            header = convert.header_from_proto(wire)
        except FedmeshError as exc:
            self._intake.count_rejection(exc)
            raise
        with _tracer.start_as_current_span(
            "aggregator.submit_update",
            context=context_from_carrier(wire.trace_context.carrier),
            attributes={
                "fedmesh.run_id": header.run_id,
                "fedmesh.round": header.round_no,
                "fedmesh.node_id": header.node_id,
                "fedmesh.payload_bytes": header.payload_bytes,
            },
        ):
            outcome = await self._intake.submit(header, _chunks(requests))
        return pb.SubmitUpdateResponse(
            digest=outcome.digest,
            received_bytes=outcome.received_bytes,
            duplicate=outcome.duplicate,
        )

    @translate_errors
    async def AggregateRound(
        self, request: pb.AggregateRoundRequest, context: object
    ) -> pb.AggregateRoundResponse:
        """Aggregate and publish a round, or return its stored result."""
        domain = AggregationRequest(
            run_id=request.run_id,
            round_no=int(request.round),
            fencing_token=int(request.fencing_token),
            spec=convert.rule_spec_from_proto(request.aggregation),
            base_model=convert.model_ref_from_proto(request.base_model),
            privacy=convert.privacy_from_proto(request.privacy),
        )
        with _tracer.start_as_current_span(
            "aggregator.aggregate_round",
            context=context_from_carrier(request.trace_context.carrier),
            attributes={
                "fedmesh.run_id": domain.run_id,
                "fedmesh.round": domain.round_no,
                "fedmesh.rule": domain.spec.rule.value,
            },
        ):
            result = await self._aggregator.aggregate(domain)
        return convert.result_to_proto(result)

    @translate_errors
    async def GetStatus(
        self, request: pb.GetStatusRequest, context: object
    ) -> pb.GetStatusResponse:
        """What is spooled, how many rounds were aggregated and updates refused."""
        return pb.GetStatusResponse(
            spooled_updates=self._spool.count,
            spooled_bytes=self._spool.total_bytes,
            rounds_aggregated=self._metrics.rounds_aggregated,
            updates_rejected=self._metrics.rejected_total,
        )
