"""Typed async client of the aggregator's SecAgg+ stage RPCs.

Each stage call returns when the stage closes for the node's bucket, so its
deadline is the round's, not a short RPC deadline. A status other than OK is
final for the round: the node is out of it (a SecAgg+ stage cannot be redone).
Unary stage calls are retried on UNAVAILABLE by the channel's policy; the masked
input, a client stream, is sent again by `submit_masked_input` itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import grpc

from fedmesh.client.aggregator import connection_lost
from fedmesh.privacy.secagg import (
    EncryptedShare,
    KeyAdvertisement,
    KeyShares,
    MaskedInput,
    NeighbourKeys,
    ShareDelivery,
    UnmaskingRequest,
    UnmaskingShares,
)
from fedmesh.proto.aggregator.v1 import aggregator_pb2 as pb
from fedmesh.proto.aggregator.v1 import aggregator_pb2_grpc as pb_grpc
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.rpc.limits import CHUNK_BYTES

log = logging.getLogger(__name__)
_INITIAL_BACKOFF_S = 0.2
_MAX_BACKOFF_S = 5.0


@dataclass(frozen=True)
class SecureRoundRef:
    """A node in a secure round."""

    run_id: str
    round_no: int
    node_id: str

    def to_proto(self) -> pb.SecureRoundRef:
        """The wire form."""
        return pb.SecureRoundRef(run_id=self.run_id, round=self.round_no, node_id=self.node_id)


class SecureAggregationClient:
    """JoinSecureRound and the four stage calls, in the library's message types."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = pb_grpc.AggregatorServiceStub(channel)

    async def join(self, ref: SecureRoundRef, deadline_s: float) -> pb.JoinSecureRoundResponse:
        """The public parameters of the node's bucket."""
        response: pb.JoinSecureRoundResponse = await self._stub.JoinSecureRound(
            pb.JoinSecureRoundRequest(ref=ref.to_proto()), timeout=deadline_s
        )
        return response

    async def advertise_keys(
        self, ref: SecureRoundRef, advert: KeyAdvertisement, deadline_s: float
    ) -> NeighbourKeys:
        """Stage 0: send the public keys; the neighbours' keys once the stage closes."""
        response: pb.AdvertiseKeysResponse = await self._stub.AdvertiseKeys(
            pb.AdvertiseKeysRequest(
                ref=ref.to_proto(),
                encryption_public_key=advert.encryption_public_key,
                masking_public_key=advert.masking_public_key,
                signature=advert.signature,
            ),
            timeout=deadline_s,
        )
        return NeighbourKeys(
            recipient=advert.node,
            advertisements=tuple(
                KeyAdvertisement(k.node, k.encryption_public_key, k.masking_public_key, k.signature)
                for k in response.neighbours
            ),
        )

    async def share_keys(
        self, ref: SecureRoundRef, shares: KeyShares, deadline_s: float
    ) -> ShareDelivery:
        """Stage 1: send the sealed shares; those sealed for this node once the stage closes."""
        response: pb.ShareKeysResponse = await self._stub.ShareKeys(
            pb.ShareKeysRequest(
                ref=ref.to_proto(),
                shares=[
                    pb.SealedShare(
                        sender=s.sender,
                        recipient=s.recipient,
                        nonce=s.nonce,
                        ciphertext=s.ciphertext,
                    )
                    for s in shares.shares
                ],
            ),
            timeout=deadline_s,
        )
        return ShareDelivery(
            recipient=shares.sender,
            shares=tuple(
                EncryptedShare(s.sender, s.recipient, s.nonce, s.ciphertext)
                for s in response.shares
            ),
        )

    async def submit_masked_input(
        self,
        ref: SecureRoundRef,
        masked: MaskedInput,
        num_samples: int,
        local_loss: float,
        deadline_s: float,
        trace_context: Mapping[str, str] | None = None,
    ) -> UnmaskingRequest:
        """Stage 2: stream the masked vector; the bucket's survivors once the stage closes."""
        vector = masked.masked_vector
        header = pb.MaskedInputHeader(
            ref=ref.to_proto(),
            digest=hashlib.sha256(vector).hexdigest(),
            payload_bytes=len(vector),
            num_samples=num_samples,
            local_loss=local_loss,
            trace_context=common.TraceContext(carrier=dict(trace_context or {})),
        )

        def requests() -> Iterator[pb.SubmitMaskedInputRequest]:
            yield pb.SubmitMaskedInputRequest(header=header)
            for start in range(0, len(vector), CHUNK_BYTES):
                yield pb.SubmitMaskedInputRequest(chunk=vector[start : start + CHUNK_BYTES])

        # A client stream is not replayed by the channel's retry policy. Sending the same
        # masked vector again is safe: the aggregator adds a node's input once, by digest.
        end = time.monotonic() + deadline_s
        backoff = _INITIAL_BACKOFF_S
        while True:
            try:
                response: pb.SubmitMaskedInputResponse = await self._stub.SubmitMaskedInput(
                    requests(), timeout=max(0.0, end - time.monotonic())
                )
                break
            except grpc.aio.AioRpcError as exc:
                if not connection_lost(exc) or time.monotonic() + backoff >= end:
                    raise
                log.warning(
                    "masked input interrupted; sending it again",
                    extra={"fields": {"node": ref.node_id, "details": exc.details()}},
                )
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, _MAX_BACKOFF_S)
        return UnmaskingRequest(recipient=masked.node, survivors=tuple(response.survivors))

    async def reveal_shares(
        self, ref: SecureRoundRef, shares: UnmaskingShares, deadline_s: float
    ) -> tuple[int, ...]:
        """Stage 3: send the revealed shares; the bucket's contributors once it is unmasked."""
        response: pb.RevealSharesResponse = await self._stub.RevealShares(
            pb.RevealSharesRequest(
                ref=ref.to_proto(),
                self_mask_shares=[
                    pb.RevealedShare(owner=s.owner, value=s.value) for s in shares.self_mask_shares
                ],
                mask_key_shares=[
                    pb.RevealedShare(owner=s.owner, value=s.value) for s in shares.mask_key_shares
                ],
            ),
            timeout=deadline_s,
        )
        return tuple(response.contributors)
