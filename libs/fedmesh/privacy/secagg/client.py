"""The node's side of one SecAgg+ round: a state machine over the four stages."""

from __future__ import annotations

import os
from enum import Enum

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from numpy.typing import NDArray

from fedmesh.privacy.secagg import keys
from fedmesh.privacy.secagg.config import SecAggConfig
from fedmesh.privacy.secagg.errors import InvalidSecAggMessage, SecAggAbort, SecAggStageError
from fedmesh.privacy.secagg.messages import (
    KeyAdvertisement,
    KeyShares,
    MaskedInput,
    NeighbourKeys,
    RevealedShare,
    ShareDelivery,
    UnmaskingRequest,
    UnmaskingShares,
)
from fedmesh.privacy.secagg.prg import SEED_BYTES, MaskExpander
from fedmesh.privacy.secagg.quantize import WORD
from fedmesh.privacy.secagg.sealing import open_shares, seal_shares
from fedmesh.privacy.secagg.shamir import ShamirShare, split_secret


class ClientStage(Enum):
    """The next call a `SecAggClient` accepts."""

    ADVERTISE_KEYS = "advertise_keys"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    UNMASKING = "unmasking"
    DONE = "done"
    ABORTED = "aborted"


class SecAggClient:
    """One node's secrets and state for one round; each stage method is called once, in order.

    The node masks its input with a self-mask PRG(b) and, for every neighbour
    v that completed key sharing, ±PRG(HKDF(X25519(s_u, s_v))) (+ if u < v),
    so pairwise masks cancel in the sum. It reveals, per neighbour, either the
    self-mask share (neighbour survived) or the mask-key share (it dropped),
    never both.
    """

    def __init__(self, config: SecAggConfig, node: int) -> None:
        if node not in config.graph.nodes:
            raise ValueError(f"node {node} is not a participant of this round")
        self.config = config
        self.node = node
        self._stage = ClientStage.ADVERTISE_KEYS
        self._encryption_key = X25519PrivateKey.generate()
        self._masking_key = X25519PrivateKey.generate()
        self._self_mask_seed = os.urandom(SEED_BYTES)
        self._neighbour_keys: dict[int, KeyAdvertisement] = {}
        self._share_keys: dict[int, bytes] = {}
        self._pairwise_seeds: dict[int, bytes] = {}
        self._held_shares: dict[int, tuple[ShamirShare, ShamirShare]] = {}

    def __repr__(self) -> str:
        return f"SecAggClient(node={self.node}, stage={self._stage.value})"

    @property
    def stage(self) -> ClientStage:
        """The stage this client is waiting for."""
        return self._stage

    def advertise_keys(self) -> KeyAdvertisement:
        """Stage 0: publish this round's encryption and masking public keys."""
        self._enter(ClientStage.ADVERTISE_KEYS, ClientStage.SHARE_KEYS)
        return KeyAdvertisement(
            node=self.node,
            encryption_public_key=keys.public_bytes(self._encryption_key),
            masking_public_key=keys.public_bytes(self._masking_key),
        )

    def share_keys(self, neighbour_keys: NeighbourKeys) -> KeyShares:
        """Stage 1: Shamir-share the mask key and self-mask seed, sealed to each neighbour."""
        self._enter(ClientStage.SHARE_KEYS, ClientStage.MASKED_INPUT)
        self._check_recipient(neighbour_keys.recipient)
        own = self.config.graph.neighbours(self.node)
        adverts: dict[int, KeyAdvertisement] = {}
        for advert in neighbour_keys.advertisements:
            if advert.node not in own or advert.node in adverts:
                raise self._invalid(
                    f"unexpected or repeated key advertisement from node {advert.node}"
                )
            adverts[advert.node] = advert
        public_keys = [
            keys.public_bytes(self._encryption_key),
            keys.public_bytes(self._masking_key),
        ]
        for advert in adverts.values():
            public_keys += [advert.encryption_public_key, advert.masking_public_key]
        if len(set(public_keys)) != len(public_keys):
            raise self._invalid("public keys of this round must all be distinct")
        self._require_threshold(len(adverts), "neighbours advertised keys")
        self._neighbour_keys = adverts
        for peer, advert in adverts.items():
            try:
                self._share_keys[peer], self._pairwise_seeds[peer] = self._derive_pair_secrets(
                    advert
                )
            except InvalidSecAggMessage as error:
                raise self._invalid(f"node {peer}: {error}") from error
        holders = sorted(adverts)
        xs = [holder + 1 for holder in holders]
        threshold, context = self.config.threshold, self.config.round_context
        mask_key_shares = split_secret(keys.private_bytes(self._masking_key), threshold, xs)
        self_mask_shares = split_secret(self._self_mask_seed, threshold, xs)
        sealed = tuple(
            seal_shares(self._share_keys[holder], context, self.node, holder, mask_key, self_mask)
            for holder, mask_key, self_mask in zip(
                holders, mask_key_shares, self_mask_shares, strict=True
            )
        )
        return KeyShares(sender=self.node, shares=sealed)

    def masked_input(
        self, delivery: ShareDelivery, quantised_update: NDArray[np.uint32]
    ) -> MaskedInput:
        """Stage 2: keep the neighbours' shares and send y = x + PRG(b) + Σ ±PRG(s_uv) mod 2^32."""
        if quantised_update.shape != (self.config.vector_length,) or quantised_update.dtype != WORD:
            raise ValueError(
                f"quantised_update must be uint32 of shape ({self.config.vector_length},), "
                f"got {quantised_update.dtype} of shape {quantised_update.shape}"
            )
        self._enter(ClientStage.MASKED_INPUT, ClientStage.UNMASKING)
        self._check_recipient(delivery.recipient)
        held: dict[int, tuple[ShamirShare, ShamirShare]] = {}
        for message in delivery.shares:
            if message.sender not in self._neighbour_keys or message.sender in held:
                raise self._invalid(
                    f"unexpected or repeated share bundle from node {message.sender}"
                )
            if message.recipient != self.node:
                raise self._invalid(f"share bundle addressed to node {message.recipient}")
            held[message.sender] = open_shares(
                self._share_keys[message.sender], self.config.round_context, message
            )
        self._require_threshold(len(held), "neighbours completed key sharing")
        self._held_shares = held
        masked = quantised_update.copy()
        expander = MaskExpander(self.config.vector_length)
        expander.add_to(masked, self._self_mask_seed)
        for partner in sorted(held):
            if self.node < partner:
                expander.add_to(masked, self._pairwise_seeds[partner])
            else:
                expander.subtract_from(masked, self._pairwise_seeds[partner])
        return MaskedInput(node=self.node, masked_vector=masked.tobytes())

    def unmasking(self, request: UnmaskingRequest) -> UnmaskingShares:
        """Stage 3: reveal self-mask shares of surviving partners, mask-key shares of dropouts."""
        self._enter(ClientStage.UNMASKING, ClientStage.DONE)
        self._check_recipient(request.recipient)
        survivors = frozenset(request.survivors)
        if len(survivors) != len(request.survivors) or not survivors <= self.config.graph.nodes:
            raise self._invalid("survivors must be distinct participants of this round")
        if self.node not in survivors:
            raise self._invalid(
                f"node {self.node} sent a masked input but is not listed as a survivor"
            )
        if len(survivors) < self.config.min_survivors:
            self._abort(
                f"{len(survivors)} survivors, fewer than min_survivors {self.config.min_survivors}"
            )
        if not survivors & self._held_shares.keys():
            # With every mask partner dropped, the self-mask share would unmask this node alone.
            self._abort(f"node {self.node} has no surviving mask partner")
        self_mask_shares = []
        mask_key_shares = []
        for owner in sorted(self._held_shares):
            mask_key_share, self_mask_share = self._held_shares[owner]
            if owner in survivors:
                self_mask_shares.append(RevealedShare(owner, self_mask_share.y_bytes()))
            else:
                mask_key_shares.append(RevealedShare(owner, mask_key_share.y_bytes()))
        self._forget_secrets()
        return UnmaskingShares(
            sender=self.node,
            self_mask_shares=tuple(self_mask_shares),
            mask_key_shares=tuple(mask_key_shares),
        )

    def _derive_pair_secrets(self, advert: KeyAdvertisement) -> tuple[bytes, bytes]:
        context = self.config.round_context
        encryption_secret = keys.agree(self._encryption_key, advert.encryption_public_key)
        masking_secret = keys.agree(self._masking_key, advert.masking_public_key)
        return (
            keys.share_encryption_key(encryption_secret, context, self.node, advert.node),
            keys.pairwise_mask_seed(masking_secret, context, self.node, advert.node),
        )

    def _enter(self, expected: ClientStage, following: ClientStage) -> None:
        if self._stage is not expected:
            raise SecAggStageError(
                f"node {self.node}: {expected.value} called while at stage {self._stage.value}"
            )
        self._stage = following

    def _check_recipient(self, recipient: int) -> None:
        if recipient != self.node:
            raise self._invalid(f"message addressed to node {recipient}, this is node {self.node}")

    def _require_threshold(self, count: int, what: str) -> None:
        if count < self.config.threshold:
            self._abort(f"node {self.node}: only {count} {what}, threshold {self.config.threshold}")

    def _invalid(self, detail: str) -> InvalidSecAggMessage:
        self._stage = ClientStage.ABORTED
        self._forget_secrets()
        return InvalidSecAggMessage(detail)

    def _abort(self, reason: str) -> None:
        self._stage = ClientStage.ABORTED
        self._forget_secrets()
        raise SecAggAbort(reason)

    def _forget_secrets(self) -> None:
        self._held_shares = {}
        self._share_keys = {}
        self._pairwise_seeds = {}
        self._self_mask_seed = b""
