"""The aggregator's side of one SecAgg+ round: collect each stage, enforce thresholds, unmask."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, NoReturn

import numpy as np
from numpy.typing import NDArray

from fedmesh.privacy.secagg import keys
from fedmesh.privacy.secagg.config import SecAggConfig
from fedmesh.privacy.secagg.errors import (
    ConflictingSecAggMessage,
    InvalidSecAggMessage,
    SecAggAbort,
    SecAggStageError,
)
from fedmesh.privacy.secagg.messages import (
    EncryptedShare,
    KeyAdvertisement,
    KeyShares,
    MaskedInput,
    NeighbourKeys,
    RevealedShare,
    ShareDelivery,
    UnmaskingRequest,
    UnmaskingShares,
)
from fedmesh.privacy.secagg.prg import MaskExpander
from fedmesh.privacy.secagg.quantize import WORD
from fedmesh.privacy.secagg.shamir import FIELD_PRIME, SHARE_BYTES, ShamirShare, reconstruct_secret


class ServerStage(Enum):
    """The messages a `SecAggServer` accepts now."""

    ADVERTISE_KEYS = "advertise_keys"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    UNMASKING = "unmasking"
    DONE = "done"
    ABORTED = "aborted"


@dataclass(frozen=True, eq=False)
class SecAggResult:
    """The exact sum mod 2^32 of the contributors' quantised inputs."""

    total: NDArray[np.uint32]
    contributors: tuple[int, ...]
    dropped: tuple[int, ...]


class SecAggServer:
    """Routes the stages of one round and removes the masks from the sum; never sees a single input.

    Masked inputs are added into one running sum as they arrive, so the server
    holds only that sum (masked until `finish`) and a digest per node. Each
    `close_*` ends a stage: it decides who is still in the round and returns
    the messages to send to each node, or raises `SecAggAbort` when too few
    remain. Nodes whose neighbourhood in the round falls below the Shamir
    threshold are dropped before anyone masks with them.
    """

    def __init__(self, config: SecAggConfig) -> None:
        self.config = config
        self._stage = ServerStage.ADVERTISE_KEYS
        self._abort_reason = ""
        self._advertisements: dict[int, KeyAdvertisement] = {}
        self._key_holders: frozenset[int] = frozenset()
        self._key_shares: dict[int, KeyShares] = {}
        self._sharers: frozenset[int] = frozenset()
        self._masked_sum: NDArray[np.uint32] = np.zeros(config.vector_length, dtype=WORD)
        self._masked_digests: dict[int, bytes] = {}
        self._survivors: frozenset[int] = frozenset()
        self._unmasking: dict[int, UnmaskingShares] = {}

    def __repr__(self) -> str:
        return (
            f"SecAggServer(stage={self._stage.value}, participants={len(self.config.participants)})"
        )

    @property
    def stage(self) -> ServerStage:
        """The stage whose messages are being collected."""
        return self._stage

    @property
    def abort_reason(self) -> str:
        """Why the round aborted; empty unless the stage is ABORTED."""
        return self._abort_reason

    def receive_advertisement(self, message: KeyAdvertisement) -> None:
        """Stage 0: record a node's public keys (a repeat of the same message is a no-op)."""
        self._require_stage(ServerStage.ADVERTISE_KEYS, "key advertisement", message.node)
        self._require_member(message.node, self.config.graph.nodes, "a participant")
        for key in (message.encryption_public_key, message.masking_public_key):
            if len(key) != keys.PUBLIC_KEY_BYTES:
                raise InvalidSecAggMessage(
                    f"node {message.node}: public key is {len(key)} bytes, "
                    f"expected {keys.PUBLIC_KEY_BYTES}"
                )
        self._record(self._advertisements, message.node, message)

    def close_advertisements(self) -> dict[int, NeighbourKeys]:
        """End stage 0: each remaining node receives its neighbours' advertisements."""
        self._require_stage(ServerStage.ADVERTISE_KEYS, "close of key advertisement")
        self._key_holders = self._keep_well_connected(self._advertisements, "advertised keys")
        self._stage = ServerStage.SHARE_KEYS
        return {
            node: NeighbourKeys(
                recipient=node,
                advertisements=tuple(
                    self._advertisements[peer]
                    for peer in sorted(self._neighbours_in(node, self._key_holders))
                ),
            )
            for node in sorted(self._key_holders)
        }

    def receive_key_shares(self, message: KeyShares) -> None:
        """Stage 1: record a node's sealed share bundles, one for each neighbour that advertised."""
        self._require_stage(ServerStage.SHARE_KEYS, "key shares", message.sender)
        self._require_member(message.sender, self._key_holders, "a node that advertised keys")
        expected = self._neighbours_in(message.sender, self._key_holders)
        recipients = [share.recipient for share in message.shares]
        if any(share.sender != message.sender for share in message.shares):
            raise InvalidSecAggMessage(
                f"node {message.sender} sent share bundles in another node's name"
            )
        if len(recipients) != len(set(recipients)) or set(recipients) != expected:
            raise InvalidSecAggMessage(
                f"node {message.sender} must send one share bundle to each of {sorted(expected)}, "
                f"got {sorted(recipients)}"
            )
        self._record(self._key_shares, message.sender, message)

    def close_key_sharing(self) -> dict[int, ShareDelivery]:
        """End stage 1: each remaining node receives the bundles addressed to it."""
        self._require_stage(ServerStage.SHARE_KEYS, "close of key sharing")
        self._sharers = self._keep_well_connected(self._key_shares, "shared keys")
        inbox: dict[int, list[EncryptedShare]] = {node: [] for node in self._sharers}
        for sender in sorted(self._sharers):
            for share in self._key_shares[sender].shares:
                if share.recipient in self._sharers:
                    inbox[share.recipient].append(share)
        self._key_shares = {}
        self._stage = ServerStage.MASKED_INPUT
        return {node: ShareDelivery(node, tuple(inbox[node])) for node in sorted(self._sharers)}

    def receive_masked_input(self, message: MaskedInput) -> None:
        """Stage 2: add a node's masked vector into the running sum (once per node)."""
        self._require_stage(ServerStage.MASKED_INPUT, "masked input", message.node)
        self._require_member(message.node, self._sharers, "a node that completed key sharing")
        expected_bytes = WORD.itemsize * self.config.vector_length
        if len(message.masked_vector) != expected_bytes:
            raise InvalidSecAggMessage(
                f"node {message.node}: masked input is {len(message.masked_vector)} bytes, "
                f"expected {expected_bytes} ({self.config.vector_length} uint32 words)"
            )
        digest = hashlib.sha256(message.masked_vector).digest()
        if message.node in self._masked_digests:
            if self._masked_digests[message.node] != digest:
                raise ConflictingSecAggMessage(
                    f"node {message.node} already sent a different masked input"
                )
            return
        np.add(
            self._masked_sum, np.frombuffer(message.masked_vector, dtype=WORD), out=self._masked_sum
        )
        self._masked_digests[message.node] = digest

    def close_masked_inputs(self) -> dict[int, UnmaskingRequest]:
        """End stage 2: fix the survivors and ask each of them for its unmasking shares."""
        self._require_stage(ServerStage.MASKED_INPUT, "close of masked input")
        survivors = frozenset(self._masked_digests)
        if len(survivors) < self.config.min_survivors:
            self._abort(
                f"{len(survivors)} masked inputs received, fewer than min_survivors "
                f"{self.config.min_survivors}"
            )
        for component in self.config.graph.components(survivors):
            if len(component) < self.config.min_survivors:
                self._abort(
                    f"survivors {sorted(component)} share masks with no other survivor; unmasking "
                    f"would reveal the sum of {len(component)} inputs, fewer than min_survivors "
                    f"{self.config.min_survivors}"
                )
        self._survivors = survivors
        self._stage = ServerStage.UNMASKING
        listed = tuple(sorted(survivors))
        return {node: UnmaskingRequest(recipient=node, survivors=listed) for node in listed}

    def receive_unmasking_shares(self, message: UnmaskingShares) -> None:
        """Stage 3: record a survivor's revealed shares, checked against what it must reveal."""
        self._require_stage(ServerStage.UNMASKING, "unmasking shares", message.sender)
        self._require_member(message.sender, self._survivors, "a survivor")
        partners = self._neighbours_in(message.sender, self._sharers)
        self._check_owners(
            message.sender, message.self_mask_shares, partners & self._survivors, "self-mask"
        )
        self._check_owners(
            message.sender, message.mask_key_shares, partners - self._survivors, "mask-key"
        )
        self._record(self._unmasking, message.sender, message)

    def finish(self) -> SecAggResult:
        """End stage 3: reconstruct the secrets, remove every mask, return the survivors' sum."""
        self._require_stage(ServerStage.UNMASKING, "finish")
        self_mask_shares = self._collect(
            "self-mask seed", self._survivors, lambda m: m.self_mask_shares
        )
        dropped = self._sharers - self._survivors
        mask_key_shares = self._collect("mask key", dropped, lambda m: m.mask_key_shares)
        self_mask_seeds = [
            self._reconstruct(self_mask_shares[node], node, "self-mask seed")
            for node in sorted(self._survivors)
        ]
        # (seed, sign the partner applied) for each mask a dropped node shared with a survivor.
        orphaned_masks: list[tuple[bytes, int]] = []
        for node in sorted(dropped):
            private_key = keys.private_key_from_bytes(
                self._reconstruct(mask_key_shares[node], node, "mask key")
            )
            if keys.public_bytes(private_key) != self._advertisements[node].masking_public_key:
                self._abort(
                    f"the reconstructed mask key of node {node} does not match its advertised key"
                )
            for partner in sorted(self._neighbours_in(node, self._survivors)):
                secret = keys.agree(private_key, self._advertisements[partner].masking_public_key)
                seed = keys.pairwise_mask_seed(secret, self.config.round_context, node, partner)
                orphaned_masks.append((seed, 1 if partner < node else -1))
        total = self._masked_sum
        expander = MaskExpander(self.config.vector_length)
        for seed in self_mask_seeds:
            expander.subtract_from(total, seed)
        for seed, applied_sign in orphaned_masks:
            if applied_sign > 0:
                expander.subtract_from(total, seed)
            else:
                expander.add_to(total, seed)
        contributors = tuple(sorted(self._survivors))
        self._stage = ServerStage.DONE
        self._masked_sum = np.zeros(0, dtype=WORD)
        self._unmasking = {}
        absent = tuple(sorted(self.config.graph.nodes - self._survivors))
        return SecAggResult(total=total, contributors=contributors, dropped=absent)

    def _collect(
        self,
        what: str,
        owners: Iterable[int],
        revealed: Callable[[UnmaskingShares], tuple[RevealedShare, ...]],
    ) -> dict[int, list[ShamirShare]]:
        shares: dict[int, list[ShamirShare]] = defaultdict(list)
        for sender, message in self._unmasking.items():
            for share in revealed(message):
                shares[share.owner].append(ShamirShare.from_y_bytes(sender + 1, share.value))
        for owner in sorted(owners):
            if len(shares[owner]) < self.config.threshold:
                self._abort(
                    f"the {what} of node {owner} cannot be reconstructed: "
                    f"{len(shares[owner])} neighbours revealed a share, "
                    f"threshold {self.config.threshold}"
                )
        return shares

    def _reconstruct(self, shares: list[ShamirShare], owner: int, what: str) -> bytes:
        try:
            return reconstruct_secret(shares, self.config.threshold)
        except ValueError as error:
            self._abort(f"the {what} of node {owner} could not be reconstructed: {error}")

    def _check_owners(
        self, sender: int, revealed: tuple[RevealedShare, ...], expected: frozenset[int], what: str
    ) -> None:
        owners = [share.owner for share in revealed]
        if len(owners) != len(set(owners)) or set(owners) != expected:
            raise InvalidSecAggMessage(
                f"node {sender} must reveal {what} shares of exactly {sorted(expected)}, "
                f"got {sorted(owners)}"
            )
        for share in revealed:
            if len(share.value) != SHARE_BYTES or int.from_bytes(share.value, "big") >= FIELD_PRIME:
                raise InvalidSecAggMessage(
                    f"node {sender}: the {what} share of node {share.owner} is not "
                    f"a {SHARE_BYTES}-byte field element"
                )

    def _keep_well_connected(self, arrived: Iterable[int], what: str) -> frozenset[int]:
        # A node with fewer than t neighbours left could never have its secrets reconstructed.
        kept = set(arrived)
        while weak := {
            node
            for node in kept
            if len(self.config.graph.neighbours(node) & kept) < self.config.threshold
        }:
            kept -= weak
        if len(kept) < self.config.min_survivors:
            self._abort(
                f"{len(kept)} nodes {what} with at least {self.config.threshold} "
                f"neighbours that also did, "
                f"fewer than min_survivors {self.config.min_survivors}"
            )
        return frozenset(kept)

    def _neighbours_in(self, node: int, members: frozenset[int]) -> frozenset[int]:
        return self.config.graph.neighbours(node) & members

    def _require_stage(self, expected: ServerStage, what: str, node: int | None = None) -> None:
        if self._stage is expected:
            return
        sender = "" if node is None else f" from node {node}"
        if self._stage is ServerStage.ABORTED:
            raise SecAggStageError(
                f"{what}{sender} refused: the round aborted ({self._abort_reason})"
            )
        raise SecAggStageError(f"{what}{sender} refused: the round is at stage {self._stage.value}")

    @staticmethod
    def _require_member(node: int, members: frozenset[int], role: str) -> None:
        if node not in members:
            raise InvalidSecAggMessage(f"node {node} is not {role} in this round")

    @staticmethod
    def _record(store: dict[int, Any], node: int, message: object) -> None:
        if node in store:
            if store[node] != message:
                raise ConflictingSecAggMessage(
                    f"node {node} already sent a different {type(message).__name__}"
                )
            return
        store[node] = message

    def _abort(self, reason: str) -> NoReturn:
        self._stage = ServerStage.ABORTED
        self._abort_reason = reason
        self._masked_sum = np.zeros(0, dtype=WORD)
        self._unmasking = {}
        self._key_shares = {}
        raise SecAggAbort(reason)
