"""The aggregator's RPC edge: translate, authorize, validate the stream's framing, delegate."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

import grpc
from opentelemetry import context as otel_context

from fedmesh.client.aggregator import UPLOAD_ADMITTED
from fedmesh.errors import FedmeshError
from fedmesh.proto.aggregator.v1 import aggregator_pb2 as pb
from fedmesh.proto.aggregator.v1 import aggregator_pb2_grpc as pb_grpc
from fedmesh.rpc import translate_errors
from fedmesh.rpc.authorization import CallerPolicy
from fedmesh.services.aggregator import convert
from fedmesh.services.aggregator.metrics import AggregatorMetrics
from fedmesh.services.aggregator.round_aggregation import AggregationRequest, RoundAggregator
from fedmesh.services.aggregator.secure_servicer import SecureAggregationEdge
from fedmesh.services.aggregator.spool import UpdateSpool
from fedmesh.services.aggregator.submission import UpdateIntake
from fedmesh.services.aggregator.update import Chunk
from fedmesh.services.aggregator.validation import InvalidUpdate
from fedmesh.services.aggregator.wire import SubmitItem, parse_submit_request
from fedmesh.telemetry import context_from_carrier, tracer

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AggregatorService"].full_name
_tracer = tracer(__name__)


def _parent(carrier: Mapping[str, str]) -> otel_context.Context | None:
    # The round's trace travels in the message; without one, the RPC's own span is the parent.
    return context_from_carrier(carrier) if carrier else None


async def _read_header(requests: AsyncIterator[SubmitItem]) -> pb.UpdateHeader:
    try:
        first = await anext(requests)
    except StopAsyncIteration:
        raise InvalidUpdate(
            "malformed_stream", "SubmitUpdate stream is empty; expected a header, then chunks"
        ) from None
    if isinstance(first, memoryview) or first.WhichOneof("item") == "chunk":
        raise InvalidUpdate(
            "malformed_stream", "SubmitUpdate stream starts with a chunk; expected the header first"
        )
    if first.WhichOneof("item") is None:
        raise InvalidUpdate(
            "malformed_stream",
            "SubmitUpdate stream starts with an empty message; expected the header first",
        )
    return first.header


async def _chunks(requests: AsyncIterator[SubmitItem]) -> AsyncIterator[Chunk]:
    async for item in requests:
        if isinstance(item, memoryview):
            yield item
        elif item.WhichOneof("item") == "chunk":
            yield item.chunk
        elif item.WhichOneof("item") == "header":
            raise InvalidUpdate(
                "malformed_stream",
                "SubmitUpdate stream carries a second header; expected only chunks after the first",
            )
        else:
            raise InvalidUpdate(
                "malformed_stream",
                "SubmitUpdate stream carries an empty message; expected only chunks after the "
                "header",
            )


async def _drain(requests: AsyncIterator[SubmitItem], limit: int) -> None:
    # A sender refused mid-stream is still writing; reading the rest of what it
    # announced lets it receive the real status instead of a failed write.
    drained = 0
    with contextlib.suppress(Exception):
        async for item in requests:
            drained += len(item) if isinstance(item, memoryview) else item.ByteSize()
            if drained > limit:
                return


def add_to_server(servicer: AggregatorServicer, server: grpc.aio.Server) -> None:
    """Register the servicer, SubmitUpdate with the zero-copy chunk parser."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "SubmitUpdate": grpc.stream_unary_rpc_method_handler(
            servicer.SubmitUpdate,
            request_deserializer=parse_submit_request,
            response_serializer=pb.SubmitUpdateResponse.SerializeToString,
        ),
        "AggregateRound": grpc.unary_unary_rpc_method_handler(
            servicer.AggregateRound,
            request_deserializer=pb.AggregateRoundRequest.FromString,
            response_serializer=pb.AggregateRoundResponse.SerializeToString,
        ),
        "GetStatus": grpc.unary_unary_rpc_method_handler(
            servicer.GetStatus,
            request_deserializer=pb.GetStatusRequest.FromString,
            response_serializer=pb.GetStatusResponse.SerializeToString,
        ),
        "SubmitMaskedInput": grpc.stream_unary_rpc_method_handler(
            servicer.SubmitMaskedInput,
            request_deserializer=pb.SubmitMaskedInputRequest.FromString,
            response_serializer=pb.SubmitMaskedInputResponse.SerializeToString,
        ),
    }
    for name, request, response in (
        ("JoinSecureRound", pb.JoinSecureRoundRequest, pb.JoinSecureRoundResponse),
        ("AdvertiseKeys", pb.AdvertiseKeysRequest, pb.AdvertiseKeysResponse),
        ("ShareKeys", pb.ShareKeysRequest, pb.ShareKeysResponse),
        ("RevealShares", pb.RevealSharesRequest, pb.RevealSharesResponse),
    ):
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, name),
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


class AggregatorServicer(pb_grpc.AggregatorServiceServicer):
    """SubmitUpdate, AggregateRound, GetStatus and the SecAgg+ stages over the domain objects."""

    def __init__(
        self,
        intake: UpdateIntake,
        aggregator: RoundAggregator,
        spool: UpdateSpool,
        metrics: AggregatorMetrics,
        secure: SecureAggregationEdge,
        *,
        tls_required: bool,
    ) -> None:
        """``tls_required`` (outside the dev profile) makes every call present a SPIFFE ID."""
        self._intake = intake
        self._aggregator = aggregator
        self._spool = spool
        self._metrics = metrics
        self._secure = secure
        self._callers = CallerPolicy(tls_required=tls_required)

    @translate_errors
    async def SubmitUpdate(
        self,
        request_iterator: AsyncIterable[SubmitItem],
        context: grpc.aio.ServicerContext[SubmitItem, pb.SubmitUpdateResponse],
    ) -> pb.SubmitUpdateResponse:
        """Receive one update: header first, then the payload's chunks.

        Once the header passes every check, initial metadata ``fedmesh-upload:
        admitted`` tells the sender to stream; a refusal or a duplicate ends the
        call before that, so the sender never writes into a finished call.
        """
        requests = aiter(request_iterator)
        try:
            wire = await _read_header(requests)
            self._callers.node(context, wire.node_id)
            header = convert.header_from_proto(wire)
        except FedmeshError as exc:
            self._intake.count_rejection(exc)
            raise
        with _tracer.start_as_current_span(
            "aggregator.submit_update",
            context=_parent(wire.trace_context.carrier),
            attributes={
                "fedmesh.run_id": header.run_id,
                "fedmesh.round": header.round_no,
                "fedmesh.node_id": header.node_id,
                "fedmesh.payload_bytes": header.payload_bytes,
            },
        ):
            admitted = False

            async def admit() -> None:
                nonlocal admitted
                admitted = True
                await context.send_initial_metadata((UPLOAD_ADMITTED,))

            try:
                outcome = await self._intake.submit(header, _chunks(requests), admit)
            except FedmeshError:
                if admitted:
                    await _drain(requests, header.payload_bytes)
                raise
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
        self._callers.allow(context, "AggregateRound", services=("coordinator",))
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
            context=_parent(request.trace_context.carrier),
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
        self._callers.authenticated(context)
        return pb.GetStatusResponse(
            spooled_updates=self._spool.count,
            spooled_bytes=self._spool.total_bytes,
            rounds_aggregated=self._metrics.rounds_aggregated,
            updates_rejected=self._metrics.rejected_total,
        )

    @translate_errors
    async def JoinSecureRound(
        self, request: pb.JoinSecureRoundRequest, context: object
    ) -> pb.JoinSecureRoundResponse:
        """The public SecAgg+ parameters of the node's bucket."""
        return await self._secure.join(request, context)

    @translate_errors
    async def AdvertiseKeys(
        self, request: pb.AdvertiseKeysRequest, context: object
    ) -> pb.AdvertiseKeysResponse:
        """Stage 0 of SecAgg+."""
        return await self._secure.advertise_keys(request, context)

    @translate_errors
    async def ShareKeys(
        self, request: pb.ShareKeysRequest, context: object
    ) -> pb.ShareKeysResponse:
        """Stage 1 of SecAgg+."""
        return await self._secure.share_keys(request, context)

    @translate_errors
    async def SubmitMaskedInput(
        self, request_iterator: AsyncIterable[pb.SubmitMaskedInputRequest], context: object
    ) -> pb.SubmitMaskedInputResponse:
        """Stage 2 of SecAgg+."""
        return await self._secure.submit_masked_input(request_iterator, context)

    @translate_errors
    async def RevealShares(
        self, request: pb.RevealSharesRequest, context: object
    ) -> pb.RevealSharesResponse:
        """Stage 3 of SecAgg+."""
        return await self._secure.reveal_shares(request, context)
