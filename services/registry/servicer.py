"""The registry's RPC edge: translate, authorize, validate, delegate."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from opentelemetry import context as otel_context

from fedmesh.errors import InvalidArgument
from fedmesh.proto.registry.v1 import registry_pb2 as pb
from fedmesh.proto.registry.v1 import registry_pb2_grpc as pb_grpc
from fedmesh.rpc import CHUNK_BYTES, translate_errors
from fedmesh.rpc.authorization import CallerPolicy
from fedmesh.services.registry import wire
from fedmesh.services.registry.aliases import AliasBook
from fedmesh.services.registry.catalog import Catalog
from fedmesh.services.registry.chain import ChainVerifier
from fedmesh.services.registry.downloads import BlobStreamer
from fedmesh.services.registry.names import check_alias, check_name, check_version
from fedmesh.services.registry.promotion import Promotions
from fedmesh.services.registry.publishing import Publisher
from fedmesh.telemetry import context_from_carrier

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RegistryService"].full_name


async def _chunks(messages: AsyncIterator[pb.PublishModelRequest]) -> AsyncIterator[bytes]:
    index = 1
    async for message in messages:
        index += 1
        if message.WhichOneof("item") != "chunk":
            raise InvalidArgument(
                f"PublishModel takes one header, first, then chunks; message {index} is not a chunk"
            )
        yield message.chunk


@contextlib.contextmanager
def _trace_context(header: pb.PublishHeader) -> Iterator[None]:
    """Continue the trace the publisher put in the header, when it put one there."""
    if not header.trace_context.carrier:
        yield
        return
    token = otel_context.attach(context_from_carrier(header.trace_context.carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


class RegistryServicer(pb_grpc.RegistryServiceServicer):
    """Implements fedmesh.registry.v1.RegistryService over the domain objects."""

    def __init__(
        self,
        *,
        publisher: Publisher,
        catalog: Catalog,
        streamer: BlobStreamer,
        verifier: ChainVerifier,
        promotions: Promotions,
        aliases: AliasBook,
        tls_required: bool,
    ) -> None:
        """``tls_required`` (outside the dev profile) makes every call present a SPIFFE ID."""
        self._publisher = publisher
        self._catalog = catalog
        self._streamer = streamer
        self._verifier = verifier
        self._promotions = promotions
        self._aliases = aliases
        self._callers = CallerPolicy(tls_required=tls_required)

    @translate_errors
    async def PublishModel(
        self, request_iterator: AsyncIterator[pb.PublishModelRequest], context: Any
    ) -> pb.PublishModelResponse:
        """One header, then chunks of the canonical payload."""
        self._callers.allow(context, "PublishModel", services=("aggregator",), admin=True)
        messages = aiter(request_iterator)
        first = await anext(messages, None)
        if first is None or first.WhichOneof("item") != "header":
            raise InvalidArgument(
                "PublishModel starts with a header message; "
                + ("the stream was empty" if first is None else "the first message was a chunk")
            )
        request = wire.publish_request_from_pb(first.header)
        with _trace_context(first.header):
            published = await self._publisher.publish(request, _chunks(messages))
        return pb.PublishModelResponse(
            version=wire.version_to_pb(published.version), duplicate=published.duplicate
        )

    @translate_errors
    async def DownloadModel(
        self, request: pb.DownloadModelRequest, context: Any
    ) -> AsyncIterator[pb.DownloadModelResponse]:
        """The version record, then its bytes from the offset."""
        self._callers.authenticated(context)
        version = await self._catalog.get(request.name, request.version, request.alias)
        async with self._streamer.open(
            version, request.offset, request.chunk_bytes or CHUNK_BYTES
        ) as stream:
            yield pb.DownloadModelResponse(version=wire.version_to_pb(version))
            async for chunk in stream.chunks():
                yield pb.DownloadModelResponse(chunk=chunk)

    @translate_errors
    async def GetModelVersion(
        self, request: pb.GetModelVersionRequest, context: Any
    ) -> pb.GetModelVersionResponse:
        """One version by number, alias, or the latest."""
        self._callers.authenticated(context)
        version = await self._catalog.get(request.name, request.version, request.alias)
        return pb.GetModelVersionResponse(version=wire.version_to_pb(version))

    @translate_errors
    async def ListModelVersions(
        self, request: pb.ListModelVersionsRequest, context: Any
    ) -> pb.ListModelVersionsResponse:
        """A page of versions, newest first."""
        self._callers.authenticated(context)
        versions, token = await self._catalog.page(
            request.name, request.page_size, request.page_token
        )
        return pb.ListModelVersionsResponse(
            versions=[wire.version_to_pb(v) for v in versions], next_page_token=token
        )

    @translate_errors
    async def GetLineage(
        self, request: pb.GetLineageRequest, context: Any
    ) -> pb.GetLineageResponse:
        """A version and its ancestors by parent."""
        self._callers.authenticated(context)
        line = await self._catalog.lineage(request.name, request.version)
        return pb.GetLineageResponse(versions=[wire.version_to_pb(v) for v in line])

    @translate_errors
    async def VerifyChain(
        self, request: pb.VerifyChainRequest, context: Any
    ) -> pb.VerifyChainResponse:
        """Re-check records, links and blobs back to version 1."""
        self._callers.authenticated(context)
        check_name(request.name)
        check_version(request.version)
        return wire.chain_report_to_pb(await self._verifier.verify(request.name, request.version))

    @translate_errors
    async def RecordEvaluation(
        self, request: pb.RecordEvaluationRequest, context: Any
    ) -> pb.RecordEvaluationResponse:
        """Attach evaluation metrics to a version."""
        self._callers.allow(context, "RecordEvaluation", services=("coordinator",))
        if not request.HasField("metrics"):
            raise InvalidArgument("metrics are required")
        version = await self._promotions.record_evaluation(
            request.name, request.version, wire.evaluation_from_pb(request.metrics)
        )
        return pb.RecordEvaluationResponse(version=wire.version_to_pb(version))

    @translate_errors
    async def PromoteModel(
        self, request: pb.PromoteModelRequest, context: Any
    ) -> pb.PromoteModelResponse:
        """Point an alias at a version (production passes the gate)."""
        self._callers.allow(context, "PromoteModel", admin=True)
        if not request.alias:
            raise InvalidArgument("alias is required (e.g. 'production' or 'candidate')")
        version = await self._promotions.promote(
            request.name, request.version, request.alias, request.reason
        )
        return pb.PromoteModelResponse(version=wire.version_to_pb(version))

    @translate_errors
    async def RollbackModel(
        self, request: pb.RollbackModelRequest, context: Any
    ) -> pb.RollbackModelResponse:
        """Move production back to an earlier version."""
        self._callers.allow(context, "RollbackModel", admin=True)
        version = await self._promotions.rollback(request.name, request.version, request.reason)
        return pb.RollbackModelResponse(version=wire.version_to_pb(version))

    @translate_errors
    async def GetStatus(self, request: pb.GetStatusRequest, context: Any) -> pb.GetStatusResponse:
        """Counts and the public signing key."""
        self._callers.authenticated(context)
        return wire.status_to_pb(await self._catalog.status())

    @translate_errors
    async def ListModels(
        self, request: pb.ListModelsRequest, context: Any
    ) -> pb.ListModelsResponse:
        """Every model with its latest version and aliases."""
        self._callers.authenticated(context)
        return pb.ListModelsResponse(
            models=[wire.summary_to_pb(s) for s in await self._catalog.models()]
        )

    @translate_errors
    async def ListAliasMoves(
        self, request: pb.ListAliasMovesRequest, context: Any
    ) -> pb.ListAliasMovesResponse:
        """The recorded alias moves, newest first."""
        self._callers.authenticated(context)
        check_name(request.name)
        if request.alias:
            check_alias(request.alias)
        moves = await self._aliases.moves(request.name, request.alias)
        return pb.ListAliasMovesResponse(moves=[wire.alias_move_to_pb(m) for m in moves])
