"""A node's part in one secure round: keys before training, the masked update after.

`SecureRoundSession.open` joins the round and runs the two key stages, which
need no update, so they overlap the other nodes' start-up rather than their
training. The node signs its key advertisement with its Ed25519 key and, before
it shares any secret, checks every neighbour's advertisement against the key
the coordinator gave it for that neighbour (the task's ``peer_signing_keys``),
so an aggregator that substitutes public keys is caught, not trusted.
`contribute` then clips (already done by the learner), adds the node's share
of the DP noise when the run asks for it, quantises, masks, streams the masked
words and reveals the shares the aggregator asks for. The update itself never
leaves the node; its masked form is uniform in the ring to anyone without the
seeds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import torch

from fedmesh.client.learner import LocalUpdate
from fedmesh.client.secure_aggregation import SecureAggregationClient, SecureRoundRef
from fedmesh.client.signing import NodeSigner, verify_advertisement
from fedmesh.errors import FailedPrecondition
from fedmesh.privacy.noise import gaussian_noise
from fedmesh.privacy.secagg import (
    FixedPointCodec,
    NeighbourKeys,
    SecAggClient,
    SecAggConfig,
    ShareDelivery,
)
from fedmesh.tensors.flat import flatten
from fedmesh.tensors.torch_dtypes import manifest_of

log = logging.getLogger(__name__)


def check_participants(
    ref: SecureRoundRef,
    participants: Sequence[str],
    own_index: int,
    peer_signing_keys: Mapping[str, bytes],
) -> None:
    """Refuse a round whose participants (index order) are not those the coordinator named."""
    if tuple(participants) != tuple(sorted(peer_signing_keys)):
        raise FailedPrecondition(
            f"round {ref.round_no} of run {ref.run_id}: the aggregator lists "
            f"{len(participants)} participants that differ from the {len(peer_signing_keys)} the "
            "coordinator named in the task; the aggregator may be substituting nodes, so "
            f"node {ref.node_id!r} leaves the round"
        )
    if own_index >= len(participants) or participants[own_index] != ref.node_id:
        raise FailedPrecondition(
            f"round {ref.round_no} of run {ref.run_id}: the aggregator gave node "
            f"{ref.node_id!r} index {own_index}, which is not its place among the participants; "
            "it leaves the round"
        )


def check_neighbour_signatures(
    ref: SecureRoundRef,
    round_context: bytes,
    neighbour_keys: NeighbourKeys,
    participants: Sequence[str],
    peer_signing_keys: Mapping[str, bytes],
) -> None:
    """Refuse the round unless every neighbour's advertisement is signed by its registered key."""
    for advert in neighbour_keys.advertisements:
        owner = participants[advert.node] if advert.node < len(participants) else None
        key = peer_signing_keys.get(owner) if owner is not None else None
        if key is None or not verify_advertisement(
            key,
            advert.signature,
            round_context,
            advert.node,
            advert.encryption_public_key,
            advert.masking_public_key,
        ):
            raise FailedPrecondition(
                f"round {ref.round_no} of run {ref.run_id}: the key advertisement of neighbour "
                f"{owner or 'unknown'} (index {advert.node}) is not signed by the key the "
                "coordinator holds for it; the aggregator may be substituting keys, so node "
                f"{ref.node_id!r} leaves the round before sharing any secret"
            )


@dataclass(frozen=True)
class SecureContribution:
    """What the node learns at the end: its bucket and who contributed to the bucket's sum."""

    bucket: int
    contributors: tuple[int, ...]
    clamped_coordinates: int


class SecureRoundSession:
    """Holds one round's secrets on the node; `contribute` is called once."""

    def __init__(
        self,
        client: SecureAggregationClient,
        ref: SecureRoundRef,
        secagg: SecAggClient,
        delivery: ShareDelivery,
        codec: FixedPointCodec,
        noise_stddev: float,
        bucket: int,
        remaining_s: Callable[[], float],
    ) -> None:
        self._client = client
        self._ref = ref
        self._secagg = secagg
        self._delivery = delivery
        self._codec = codec
        self._noise_stddev = noise_stddev
        self._bucket = bucket
        self._remaining_s = remaining_s

    @classmethod
    async def open(
        cls,
        client: SecureAggregationClient,
        ref: SecureRoundRef,
        deadline_unix_ms: int,
        signer: NodeSigner,
        peer_signing_keys: Mapping[str, bytes],
        clock: Callable[[], float] = time.time,
    ) -> SecureRoundSession:
        """Join the round, advertise signed keys and exchange sealed shares with the neighbours.

        ``peer_signing_keys`` are the participants' registered keys as the
        coordinator sent them in the task. FailedPrecondition, before any secret
        leaves the node, when the aggregator's participant list or a neighbour's
        signature does not match them.
        """

        def remaining_s() -> float:
            left = deadline_unix_ms / 1000 - clock()
            if left <= 0:
                raise FailedPrecondition(
                    f"round {ref.round_no} of run {ref.run_id} passed its deadline"
                )
            return left

        joined = await client.join(ref, remaining_s())
        config = SecAggConfig(
            participants=tuple(joined.bucket_members),
            vector_length=int(joined.vector_length),
            degree=joined.degree,
            threshold=joined.threshold,
            min_survivors=joined.min_survivors,
            graph_seed=joined.graph_seed,
            round_context=joined.round_context,
        )
        participants = tuple(joined.participants)
        check_participants(ref, participants, joined.node_index, peer_signing_keys)
        secagg = SecAggClient(config, joined.node_index)
        advert = secagg.advertise_keys()
        signature = signer.sign_advertisement(
            config.round_context,
            advert.node,
            advert.encryption_public_key,
            advert.masking_public_key,
        )
        neighbour_keys = await client.advertise_keys(
            ref, replace(advert, signature=signature), remaining_s()
        )
        check_neighbour_signatures(
            ref, config.round_context, neighbour_keys, participants, peer_signing_keys
        )
        shares = await asyncio.to_thread(secagg.share_keys, neighbour_keys)
        delivery = await client.share_keys(ref, shares, remaining_s())
        return cls(
            client,
            ref,
            secagg,
            delivery,
            FixedPointCodec(joined.clip_range, joined.max_summands),
            joined.noise_stddev,
            joined.bucket,
            remaining_s,
        )

    async def contribute(
        self, update: LocalUpdate, trace_context: Mapping[str, str] | None = None
    ) -> SecureContribution:
        """Mask and send the update, reveal the requested shares; the bucket's contributors."""
        flat = flatten(update.delta, manifest_of(update.delta)).to(torch.float64)
        length = self._secagg.config.vector_length
        if flat.numel() != length:
            raise FailedPrecondition(
                f"the update has {flat.numel()} parameters; the secure round expects {length}"
            )
        if self._noise_stddev > 0:
            flat += gaussian_noise(tuple(flat.shape), self._noise_stddev, dtype=torch.float64)
        clamped = int((flat.abs() > self._codec.clip_range).sum())
        if clamped:
            log.warning(
                "coordinates clamped to the secure round's range",
                extra={
                    "fields": {
                        "node": self._ref.node_id,
                        "clamped": clamped,
                        "of": length,
                        "clip_range": self._codec.clip_range,
                    }
                },
            )
        words = self._codec.quantize(flat)
        masked = await asyncio.to_thread(self._secagg.masked_input, self._delivery, words)
        request = await self._client.submit_masked_input(
            self._ref,
            masked,
            update.samples,
            update.mean_loss,
            self._remaining_s(),
            trace_context,
        )
        shares = self._secagg.unmasking(request)
        contributors = await self._client.reveal_shares(self._ref, shares, self._remaining_s())
        return SecureContribution(self._bucket, contributors, clamped)
