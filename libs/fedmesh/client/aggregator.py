"""Typed async client of the aggregator: upload an update, aggregate a round, read status.

An upload sends its header, then waits for the aggregator to admit it
(initial metadata ``fedmesh-upload: admitted``) before streaming the payload.
A refusal or a duplicate therefore ends the call before any chunk is written,
and the caller sees the aggregator's own status: grpcio's asyncio client
reports a write into a call the server has just finished as INTERNAL
"Internal error from Core" instead of the server's status (grpc/grpc#36066).

An upload is a client stream, which the channel's retry policy cannot replay
once it has started, so `submit_update` retries by itself when the connection
is lost (UNAVAILABLE, or that INTERNAL from a write on a broken connection):
it opens a new stream and sends the same update again. That is safe because
uploads are idempotent by (run, round, node, digest): an update the aggregator
already holds is acknowledged with ``duplicate=True``. Other statuses are final.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping

import grpc
import torch
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation

from fedmesh.client.signing import NodeSigner
from fedmesh.proto.aggregator.v1 import aggregator_pb2 as pb
from fedmesh.proto.aggregator.v1 import aggregator_pb2_grpc as pb_grpc
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.rpc.limits import CHUNK_BYTES
from fedmesh.telemetry import current_carrier, tracer
from fedmesh.tensors import Manifest, digest_tensors, encode_header, iter_payload, manifest_of

log = logging.getLogger(__name__)
_tracer = tracer(__name__)

ChunkSource = Callable[[], Iterable[bytes] | AsyncIterable[bytes]]
"""Produces the payload's chunks; called once per attempt, so a retry sends them again."""

UPLOAD_ADMITTED = ("fedmesh-upload", "admitted")
"""Initial metadata by which the aggregator tells an uploader to stream its payload."""

_SUBMIT_SPAN = "fedmesh.aggregator.v1.AggregatorService/SubmitUpdate"
_WRITE_FAILED = "Internal error from Core"


def manifest_to_proto(manifest: Manifest) -> common.TensorManifest:
    """The wire form of a manifest."""
    return common.TensorManifest(
        tensors=[
            common.TensorSpec(name=spec.name, dtype=spec.dtype, shape=list(spec.shape))
            for spec in manifest.tensors
        ]
    )


async def _each(chunks: Iterable[bytes] | AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(chunks, AsyncIterable):
        async for chunk in chunks:
            yield chunk
    else:
        for chunk in chunks:
            yield chunk


def connection_lost(exc: grpc.aio.AioRpcError) -> bool:
    """UNAVAILABLE, or a write on a connection that broke mid-stream: the call may be sent again."""
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        return True
    # A write on a connection that broke mid-stream (see the module docstring).
    return exc.code() == grpc.StatusCode.INTERNAL and exc.details() == _WRITE_FAILED


class AggregatorClient:
    """Calls an aggregator over an aio channel from `fedmesh.rpc.open_channel`."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        attempts: int = 5,
        initial_backoff: float = 0.2,
        max_backoff: float = 5.0,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be ≥ 1, got {attempts}")
        self._stub = pb_grpc.AggregatorServiceStub(channel)
        self._attempts = attempts
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff

    async def submit_update(
        self,
        *,
        run_id: str,
        round_no: int,
        node_id: str,
        manifest: Manifest,
        digest: str,
        num_samples: int,
        payload_bytes: int,
        base_model: common.ModelRef,
        local_loss: float,
        chunks: ChunkSource,
        signer: NodeSigner | None = None,
        nonce: bytes = b"",
        signature: bytes = b"",
        trace_context: Mapping[str, str] | None = None,
        deadline_s: float | None = None,
    ) -> pb.SubmitUpdateResponse:
        """Stream an update (canonical payload of the delta) and return the aggregator's answer.

        With ``signer`` the header gets a fresh nonce and the node's signature over
        it (and ``nonce`` and ``signature`` must be left empty); every retry sends the
        same ones, so the aggregator sees the same update again. ``deadline_s``
        bounds each attempt; None uses the channel's default deadline.
        """
        if signer is not None:
            if nonce or signature:
                raise ValueError("pass either a signer or a nonce and signature, not both")
            signed = signer.sign_update(run_id, round_no, node_id, digest)
            nonce, signature = signed.nonce, signed.signature
        with _tracer.start_as_current_span(
            _SUBMIT_SPAN,
            kind=trace.SpanKind.CLIENT,
            attributes={"fedmesh.run_id": run_id, "fedmesh.round": round_no},
        ):
            header = pb.UpdateHeader(
                run_id=run_id,
                round=round_no,
                node_id=node_id,
                manifest=manifest_to_proto(manifest),
                digest=digest,
                num_samples=num_samples,
                payload_bytes=payload_bytes,
                base_model=base_model,
                local_loss=local_loss,
                nonce=nonce,
                signature=signature,
                trace_context=common.TraceContext(
                    carrier=dict(trace_context if trace_context is not None else current_carrier())
                ),
            )
            backoff, attempt = self._initial_backoff, 1
            while True:
                try:
                    return await self._upload(header, chunks(), deadline_s)
                except grpc.aio.AioRpcError as exc:
                    if not connection_lost(exc) or attempt >= self._attempts:
                        raise
                    log.warning(
                        "update upload interrupted; sending it again",
                        extra={"fields": {"attempt": attempt, "details": exc.details()}},
                    )
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff, attempt = min(backoff * 2, self._max_backoff), attempt + 1

    async def _upload(
        self,
        header: pb.UpdateHeader,
        chunks: Iterable[bytes] | AsyncIterable[bytes],
        deadline_s: float | None,
    ) -> pb.SubmitUpdateResponse:
        # The OpenTelemetry client interceptor waits for a stream-unary call to end
        # before handing it over, which would keep the header from being written; this
        # call is traced by the span of `submit_update` instead.
        with suppress_instrumentation():
            call = self._stub.SubmitUpdate(timeout=deadline_s)
        # A write into a call that has ended raises InvalidStateError; its status says why.
        with contextlib.suppress(asyncio.InvalidStateError):
            await call.write(pb.SubmitUpdateRequest(header=header))
            if UPLOAD_ADMITTED in tuple(await call.initial_metadata()):
                async for chunk in _each(chunks):
                    await call.write(pb.SubmitUpdateRequest(chunk=chunk))
                await call.done_writing()
        response: pb.SubmitUpdateResponse = await call
        return response

    async def submit_tensors(
        self,
        *,
        run_id: str,
        round_no: int,
        node_id: str,
        base_model: common.ModelRef,
        tensors: Mapping[str, torch.Tensor],
        num_samples: int,
        local_loss: float,
        chunk_bytes: int = CHUNK_BYTES,
        signer: NodeSigner | None = None,
        nonce: bytes = b"",
        signature: bytes = b"",
        trace_context: Mapping[str, str] | None = None,
        deadline_s: float | None = None,
    ) -> pb.SubmitUpdateResponse:
        """Upload a delta given as tensors: manifest, digest and size are computed here.

        ``signer``, ``nonce`` and ``signature`` are as for `submit_update`.
        """
        manifest = manifest_of(tensors)
        return await self.submit_update(
            run_id=run_id,
            round_no=round_no,
            node_id=node_id,
            manifest=manifest,
            digest=digest_tensors(tensors),
            num_samples=num_samples,
            payload_bytes=len(encode_header(manifest)) + manifest.nbytes,
            base_model=base_model,
            local_loss=local_loss,
            chunks=lambda: iter_payload(tensors, chunk_bytes),
            signer=signer,
            nonce=nonce,
            signature=signature,
            trace_context=trace_context,
            deadline_s=deadline_s,
        )

    async def aggregate_round(
        self,
        *,
        run_id: str,
        round_no: int,
        fencing_token: int,
        aggregation: common.AggregationSpec,
        base_model: common.ModelRef,
        privacy: common.PrivacySpec | None = None,
        trace_context: Mapping[str, str] | None = None,
        deadline_s: float | None = None,
    ) -> pb.AggregateRoundResponse:
        """Aggregate a round and publish its model; a repeat returns the stored result."""
        request = pb.AggregateRoundRequest(
            run_id=run_id,
            round=round_no,
            fencing_token=fencing_token,
            aggregation=aggregation,
            base_model=base_model,
            privacy=privacy if privacy is not None else common.PrivacySpec(),
            trace_context=common.TraceContext(
                carrier=dict(trace_context if trace_context is not None else current_carrier())
            ),
        )
        response: pb.AggregateRoundResponse = await self._stub.AggregateRound(
            request, timeout=deadline_s
        )
        return response

    async def status(self, deadline_s: float | None = None) -> pb.GetStatusResponse:
        """Spooled updates and bytes, rounds aggregated, updates rejected."""
        response: pb.GetStatusResponse = await self._stub.GetStatus(
            pb.GetStatusRequest(), timeout=deadline_s
        )
        return response
