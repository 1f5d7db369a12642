"""The SecAgg+ stage RPCs of the aggregator: check the caller, convert, hand to its bucket.

Every call names its node by id; with mTLS the caller must be exactly that
node's SPIFFE ID, so no node can speak in another's name. A key advertisement
must also carry the node's Ed25519 signature by its registered key; it is
checked here and passed on to the neighbours, who check it again. Each stage
call returns when the stage closes for the node's bucket.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable
from typing import Any

from fedmesh.errors import InvalidArgument
from fedmesh.privacy.secagg import (
    EncryptedShare,
    KeyAdvertisement,
    KeyShares,
    MaskedInput,
    RevealedShare,
    UnmaskingShares,
)
from fedmesh.privacy.secagg.quantize import WORD
from fedmesh.proto.aggregator.v1 import aggregator_pb2 as pb
from fedmesh.rpc.certs import spiffe_id
from fedmesh.rpc.identity import peer_identity, require_identity
from fedmesh.services.aggregator.secure_bucket import SecureBucket
from fedmesh.services.aggregator.secure_rounds import InputFacts, SecureRounds
from fedmesh.telemetry import context_from_carrier, tracer

_tracer = tracer(__name__)


class SecureAggregationEdge:
    """JoinSecureRound, AdvertiseKeys, ShareKeys, SubmitMaskedInput and RevealShares."""

    def __init__(self, rounds: SecureRounds, *, tls_required: bool) -> None:
        self._rounds = rounds
        self._tls_required = tls_required

    async def join(
        self, request: pb.JoinSecureRoundRequest, context: Any
    ) -> pb.JoinSecureRoundResponse:
        """The public parameters of the node's bucket."""
        ref = self._checked(request.ref, context)
        secure_round, index = await self._rounds.join(ref.run_id, int(ref.round), ref.node_id)
        plan = secure_round.plan
        bucket = plan.bucket_of(index)
        config = plan.configs[bucket]
        return pb.JoinSecureRoundResponse(
            node_index=index,
            bucket=bucket,
            bucket_members=list(config.participants),
            degree=config.degree,
            threshold=config.threshold,
            min_survivors=config.min_survivors,
            graph_seed=config.graph_seed,
            round_context=config.round_context,
            vector_length=config.vector_length,
            clip_range=plan.codec.clip_range,
            max_summands=plan.codec.max_summands,
            noise_stddev=plan.noise_share_stddev(bucket),
            stage_timeout_s=plan.spec.stage_timeout_s,
            participants=list(plan.participants),
        )

    async def advertise_keys(
        self, request: pb.AdvertiseKeysRequest, context: Any
    ) -> pb.AdvertiseKeysResponse:
        """Stage 0: the node's public keys in; its neighbours' keys out."""
        index, bucket = await self._member(request.ref, context)
        ref = request.ref
        neighbours = await bucket.advertise_keys(
            KeyAdvertisement(
                index,
                request.encryption_public_key,
                request.masking_public_key,
                request.signature,
            ),
            self._rounds.signing_key(ref.run_id, int(ref.round), ref.node_id),
        )
        return pb.AdvertiseKeysResponse(
            neighbours=[
                pb.SecAggPublicKeys(
                    node=advert.node,
                    encryption_public_key=advert.encryption_public_key,
                    masking_public_key=advert.masking_public_key,
                    signature=advert.signature,
                )
                for advert in neighbours.advertisements
            ]
        )

    async def share_keys(self, request: pb.ShareKeysRequest, context: Any) -> pb.ShareKeysResponse:
        """Stage 1: sealed shares for each neighbour in; those sealed for this node out."""
        index, bucket = await self._member(request.ref, context)
        delivery = await bucket.share_keys(
            KeyShares(
                sender=index,
                shares=tuple(
                    EncryptedShare(s.sender, s.recipient, s.nonce, s.ciphertext)
                    for s in request.shares
                ),
            )
        )
        return pb.ShareKeysResponse(
            shares=[
                pb.SealedShare(
                    sender=s.sender, recipient=s.recipient, nonce=s.nonce, ciphertext=s.ciphertext
                )
                for s in delivery.shares
            ]
        )

    async def submit_masked_input(
        self, requests: AsyncIterable[pb.SubmitMaskedInputRequest], context: Any
    ) -> pb.SubmitMaskedInputResponse:
        """Stage 2: a header, then the masked words in chunks; the bucket's survivors out."""
        stream = aiter(requests)
        first = await anext(stream, None)
        if first is None or first.WhichOneof("item") != "header":
            raise InvalidArgument(
                "SubmitMaskedInput must start with a header, then the masked vector in chunks"
            )
        header = first.header
        index, bucket = await self._member(header.ref, context)
        expected = WORD.itemsize * bucket.vector_length
        if header.payload_bytes != expected:
            raise InvalidArgument(
                f"header.payload_bytes is {header.payload_bytes}; the masked vector of this "
                f"round has {expected} bytes ({bucket.vector_length} uint32 words)"
            )
        with _tracer.start_as_current_span(
            "aggregator.secure_masked_input",
            context=context_from_carrier(header.trace_context.carrier)
            if header.trace_context.carrier
            else None,
            attributes={"fedmesh.run_id": header.ref.run_id, "fedmesh.round": header.ref.round},
        ):
            masked = await _read_chunks(stream, expected)
            if hashlib.sha256(masked).hexdigest() != header.digest:
                raise InvalidArgument(
                    "the masked vector does not hash to header.digest; it was damaged in transit"
                )
            self._rounds.note_input(
                header.ref.run_id,
                int(header.ref.round),
                header.ref.node_id,
                InputFacts(int(header.num_samples), float(header.local_loss), expected),
            )
            request = await bucket.masked_input(MaskedInput(index, bytes(masked)))
        return pb.SubmitMaskedInputResponse(survivors=list(request.survivors))

    async def reveal_shares(
        self, request: pb.RevealSharesRequest, context: Any
    ) -> pb.RevealSharesResponse:
        """Stage 3: the node's revealed shares in; the bucket's contributors once unmasked."""
        index, bucket = await self._member(request.ref, context)
        result = await bucket.unmasking(
            UnmaskingShares(
                sender=index,
                self_mask_shares=tuple(
                    RevealedShare(s.owner, s.value) for s in request.self_mask_shares
                ),
                mask_key_shares=tuple(
                    RevealedShare(s.owner, s.value) for s in request.mask_key_shares
                ),
            )
        )
        return pb.RevealSharesResponse(contributors=list(result.contributors))

    async def _member(self, ref: pb.SecureRoundRef, context: Any) -> tuple[int, SecureBucket]:
        checked = self._checked(ref, context)
        return await self._rounds.find(checked.run_id, int(checked.round), checked.node_id)

    def _checked(self, ref: pb.SecureRoundRef, context: Any) -> pb.SecureRoundRef:
        missing = [name for name in ("run_id", "node_id") if not getattr(ref, name)]
        if missing or ref.round < 1:
            raise InvalidArgument(
                "ref must name run_id, node_id and a round ≥ 1; "
                f"got run_id={ref.run_id!r}, node_id={ref.node_id!r}, round={ref.round}"
            )
        if self._tls_required or peer_identity(context) is not None:
            require_identity(
                context, spiffe_id("node", ref.node_id), tls_required=self._tls_required
            )
        return ref


async def _read_chunks(stream: Any, expected: int) -> bytearray:
    buffer = bytearray()
    async for item in stream:
        if item.WhichOneof("item") != "chunk":
            raise InvalidArgument(
                "SubmitMaskedInput carries a second header or an empty message after the "
                "first; expected only chunks"
            )
        if len(buffer) + len(item.chunk) > expected:
            raise InvalidArgument(
                f"the masked vector is longer than the {expected} bytes its header announced"
            )
        buffer += item.chunk
    if len(buffer) != expected:
        raise InvalidArgument(
            f"the masked vector has {len(buffer)} bytes; its header announced {expected}"
        )
    return buffer
