"""Accepting one node's update: check, stream, verify, spool durably, then record the receipt.

Before any byte of the payload is read, the header's Ed25519 signature must
verify with the key the coordinator recorded for the node in the round, and
its nonce must not have signed another update of the node in this run. The
nonce is bound to the update just before the receipt is written.

A rejected update leaves nothing behind: no spool file, no receipt, no bound
nonce (except when the round closes between binding the nonce and writing the
receipt; the nonce then stays bound to that update, which refuses only other
updates that reuse it). The same update again (same digest) is acknowledged as a duplicate without
re-reading it; a different one for the same round and node is refused.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from fedmesh.errors import AlreadyExists, FailedPrecondition, FedmeshError
from fedmesh.services.aggregator.base_model import BaseManifests
from fedmesh.services.aggregator.locks import KeyedLocks
from fedmesh.services.aggregator.metrics import AggregatorMetrics
from fedmesh.services.aggregator.nonces import UsedNonces, binding
from fedmesh.services.aggregator.spool import SpoolKey, SpoolWriter, UpdateSpool
from fedmesh.services.aggregator.update import Chunk, ModelRef, UpdateHeader
from fedmesh.services.aggregator.validation import (
    InvalidUpdate,
    PayloadChecker,
    UnverifiedUpdate,
    check_header,
    check_manifest,
    check_signature,
    payload_size,
)
from fedmesh.store import Receipt, ReceiptOutcome, RoundStore


@dataclass(frozen=True)
class SubmitOutcome:
    """What the node is told: the digest kept, the bytes it covers, whether it was a retry."""

    digest: str
    received_bytes: int
    duplicate: bool


def rejection_reason(exc: BaseException) -> str:
    """The metric label of a refused update: the specific reason, else the status name."""
    if isinstance(exc, InvalidUpdate | UnverifiedUpdate):
        return exc.reason
    if isinstance(exc, FedmeshError):
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()
    return "internal"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class UpdateIntake:
    """Receives updates for open rounds into the spool and records their receipts."""

    def __init__(
        self,
        rounds: RoundStore,
        spool: UpdateSpool,
        manifests: BaseManifests,
        metrics: AggregatorMetrics,
        max_update_bytes: int,
        nonces: UsedNonces,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self._rounds = rounds
        self._nonces = nonces
        self._spool = spool
        self._manifests = manifests
        self._metrics = metrics
        self._max_update_bytes = max_update_bytes
        self._clock_ms = clock_ms
        self._locks = KeyedLocks()

    def count_rejection(self, exc: BaseException) -> None:
        """Count an update refused before it reached `submit` (a malformed stream)."""
        self._metrics.rejected(rejection_reason(exc))

    async def submit(
        self,
        header: UpdateHeader,
        chunks: AsyncIterator[Chunk],
        on_admitted: Callable[[], Awaitable[None]] | None = None,
    ) -> SubmitOutcome:
        """Accept the update announced by ``header`` whose payload arrives as ``chunks``.

        ``on_admitted`` is awaited once the header has passed every check, just
        before the first chunk is read; a duplicate or a refused header never
        reaches it, so a sender can wait for it before streaming.
        """
        try:
            return await self._submit(header, chunks, on_admitted)
        except Exception as exc:
            self.count_rejection(exc)
            raise

    async def _submit(
        self,
        header: UpdateHeader,
        chunks: AsyncIterator[Chunk],
        on_admitted: Callable[[], Awaitable[None]] | None,
    ) -> SubmitOutcome:
        check_header(header, self._max_update_bytes)
        run_id, round_no, node_id = header.run_id, header.round_no, header.node_id
        stored = await self._rounds.check_can_submit(run_id, round_no, node_id)
        record = await self._rounds.get(run_id, round_no)
        check_signature(header, record.fields)
        await self._check_nonce(header)
        base = ModelRef.from_round_field(record.fields.get("base_model"), run_id, round_no)
        if header.base_model != base:
            raise FailedPrecondition(
                f"the update is a delta on {header.base_model}; round {round_no} of run "
                f"{run_id} aggregates onto {base}"
            )
        if stored == header.digest:
            receipt = record.receipts[node_id]
            return SubmitOutcome(header.digest, receipt.payload_bytes, duplicate=True)
        if stored is not None:
            raise AlreadyExists(
                f"node {node_id!r} already submitted update {stored} for round {round_no} of "
                f"run {run_id}; refusing a different update {header.digest}"
            )
        manifest = await self._manifests.manifest(base)
        check_manifest(manifest, header.manifest, "header manifest")
        expected = payload_size(manifest)
        if header.payload_bytes != expected:
            raise InvalidUpdate(
                "size_mismatch",
                f"header.payload_bytes is {header.payload_bytes}; the canonical payload of the "
                f"base model's manifest has {expected} bytes",
            )
        checker = PayloadChecker(manifest, header.digest, header.payload_bytes)
        if on_admitted is not None:
            await on_admitted()
        # No await between creating the file and the try: a cancelled upload must not leak it.
        writer = self._spool.begin(header.payload_bytes)
        try:
            await self._receive(checker, writer, chunks)
        except BaseException:
            await asyncio.to_thread(writer.discard)
            raise
        # Once verified, the update is committed whatever happens to the caller's stream.
        return await asyncio.shield(asyncio.ensure_future(self._commit(header, writer)))

    async def _receive(
        self, checker: PayloadChecker, writer: SpoolWriter, chunks: AsyncIterator[Chunk]
    ) -> None:
        # Each chunk is checked (hash, header, finiteness) and written in two worker threads
        # at once, while the event loop receives the next one.
        pending: asyncio.Future[None] | None = None
        try:
            async for chunk in chunks:
                self._metrics.received(len(chunk))
                if pending is not None:
                    await asyncio.shield(pending)
                pending = asyncio.ensure_future(_absorb(checker, writer, chunk))
            if pending is not None:
                await asyncio.shield(pending)
        finally:
            # A worker thread cannot be interrupted: let it finish before the file goes.
            if pending is not None:
                await asyncio.wait({pending})
                if not pending.cancelled():
                    pending.exception()
        checker.finish()

    async def _check_nonce(self, header: UpdateHeader) -> None:
        """Refuse a nonce the node already used for another update of the run."""
        held = await self._nonces.bound_to(header.run_id, header.node_id, header.nonce)
        if held is not None and held != binding(header.round_no, header.digest):
            raise _replayed(header, held)

    async def _commit(self, header: UpdateHeader, writer: SpoolWriter) -> SubmitOutcome:
        key = SpoolKey(header.run_id, header.round_no, header.node_id, header.digest)
        receipt = Receipt(
            node_id=header.node_id,
            digest=header.digest,
            num_samples=header.num_samples,
            payload_bytes=writer.written,
            local_loss=header.local_loss,
            received_unix_ms=self._clock_ms(),
        )
        async with self._locks.hold((header.run_id, header.round_no, header.node_id)):
            # Bound before the receipt: a retry of this update still passes, nothing else does.
            bound = binding(header.round_no, header.digest)
            held = await self._nonces.claim(header.run_id, header.node_id, header.nonce, bound)
            if held != bound:
                await asyncio.to_thread(writer.discard)
                raise _replayed(header, held)
            try:
                created = await self._spool.commit(writer, key)
            except BaseException:
                await asyncio.to_thread(writer.discard)
                raise
            try:
                outcome = await self._rounds.record_receipt(header.run_id, header.round_no, receipt)
            except FedmeshError:
                # A definite refusal (round closed meanwhile, a different update won the
                # race): the spooled copy has no receipt and must go. On an ambiguous
                # failure the file stays; restart reconciliation removes it if unreceipted.
                if created:
                    await self._spool.remove(key)
                raise
        if outcome is ReceiptOutcome.ACCEPTED:
            self._metrics.accepted()
        return SubmitOutcome(header.digest, writer.written, outcome is ReceiptOutcome.DUPLICATE)


def _replayed(header: UpdateHeader, held: str) -> UnverifiedUpdate:
    round_no, _, digest = held.partition(":")
    return UnverifiedUpdate(
        "replayed_nonce",
        f"header.nonce was already used by node {header.node_id!r} in run {header.run_id} for "
        f"update {digest} of round {round_no}; every update needs a fresh nonce",
    )


async def _absorb(checker: PayloadChecker, writer: SpoolWriter, chunk: Chunk) -> None:
    # Both threads always finish before this returns, so the file is never closed under a write.
    outcomes = await asyncio.gather(
        asyncio.to_thread(checker.feed, chunk),
        asyncio.to_thread(writer.write, chunk),
        return_exceptions=True,
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
