"""PublishModel: validate, fence, stream to a staged blob, place it, append the version.

Order of the two writes: the blob is renamed into place first, then one Lua script
makes the version visible. A crash in between leaves an unreferenced blob (collected
at the next start) and no version; a version never points at a missing blob.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from fedmesh.errors import (
    AlreadyExists,
    DataLoss,
    FedmeshError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from fedmesh.services.registry.blobs import BlobLocks, BlobStore, StagedBlob
from fedmesh.services.registry.catalog import Catalog
from fedmesh.services.registry.ingest import PayloadCheck, payload_size
from fedmesh.services.registry.metrics import RegistryMetrics
from fedmesh.services.registry.names import check_digest, check_name, check_version
from fedmesh.services.registry.records import (
    Provenance,
    SignedRecord,
    StoredVersion,
    VersionRecord,
    record_digest,
)
from fedmesh.services.registry.retention import Retention
from fedmesh.services.registry.signing import RecordSigner
from fedmesh.services.registry.versions import VersionStore, publication_key
from fedmesh.store.fencing import require_current
from fedmesh.tensors import Manifest

log = logging.getLogger(__name__)

MAX_RUN_ID_CHARS = 256
MAX_REASON_CHARS = 1024


@dataclass(frozen=True)
class PublishRequest:
    """The header of a publish: what the payload is and what produced it."""

    name: str
    manifest: Manifest
    digest: str
    size_bytes: int
    parent_version: int = 0
    provenance: Provenance = field(default_factory=Provenance)
    fencing_token: int = 0


@dataclass(frozen=True)
class Published:
    """The version a publish made, or found already made for its (run, round)."""

    version: StoredVersion
    duplicate: bool


def _check_provenance(p: Provenance, fencing_token: int) -> None:
    if p.run_id:
        if len(p.run_id) > MAX_RUN_ID_CHARS or not p.run_id.isprintable():
            raise InvalidArgument(
                f"run id {p.run_id[:64]!r} is invalid; expected at most {MAX_RUN_ID_CHARS} "
                "printable characters"
            )
        if p.round < 0:
            raise InvalidArgument(f"round {p.round} is negative")
    else:
        if p.round or p.participant_update_digests or p.rejected:
            raise InvalidArgument(
                "round, participant update digests and rejected nodes need a run id; a publish "
                "without a run id (an initial model) carries none of them"
            )
        if fencing_token:
            raise InvalidArgument(
                f"fencing token {fencing_token} given without a run id; a publish without a "
                "run id carries token 0"
            )
    for digest in p.participant_update_digests:
        check_digest(digest, "participant update digest")
    for rejection in p.rejected:
        if not rejection.node_id or len(rejection.reason) > MAX_REASON_CHARS:
            raise InvalidArgument(
                f"rejected node {rejection.node_id!r} is invalid; expected a node id and a "
                f"reason of at most {MAX_REASON_CHARS} characters"
            )
    if not (math.isfinite(p.epsilon_spent) and p.epsilon_spent >= 0):
        raise InvalidArgument(f"epsilon_spent {p.epsilon_spent} is invalid; expected finite >= 0")
    if not (math.isfinite(p.delta) and 0 <= p.delta < 1):
        raise InvalidArgument(f"delta {p.delta} is invalid; expected within [0, 1)")


class Publisher:
    """Turns a header and a stream of chunks into a signed version."""

    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        store: VersionStore,
        blobs: BlobStore,
        locks: BlobLocks,
        catalog: Catalog,
        signer: RecordSigner,
        retention: Retention,
        max_model_bytes: int,
        clock_ms: Callable[[], int],
        metrics: RegistryMetrics,
        after_blob_placed: Callable[[], None] | None = None,
    ) -> None:
        self._redis = redis
        self._store = store
        self._blobs = blobs
        self._locks = locks
        self._catalog = catalog
        self._signer = signer
        self._retention = retention
        self._max_model_bytes = max_model_bytes
        self._clock_ms = clock_ms
        self._metrics = metrics
        self._after_blob_placed = after_blob_placed

    async def publish(self, request: PublishRequest, chunks: AsyncIterator[bytes]) -> Published:
        """Publish a model; a retry of a run's round returns the version it already made."""
        started = time.perf_counter()
        try:
            published = await self._publish(request, chunks)
        except FedmeshError:
            self._metrics.publish_outcome("refused")
            raise
        if published.duplicate:
            self._metrics.publish_outcome("duplicate")
        else:
            self._metrics.published(time.perf_counter() - started)
        return published

    async def _publish(self, request: PublishRequest, chunks: AsyncIterator[bytes]) -> Published:
        self._check(request)
        run = request.provenance
        if run.run_id:
            await require_current(
                self._redis,
                request.fencing_token,
                f"publishing round {run.round} of run {run.run_id} as model {request.name!r}",
            )
            existing = await self._store.publication(request.name, run.run_id, run.round)
            if existing is not None:
                return await self._duplicate(request, existing)
        if request.parent_version:
            await self._check_parent(request)
        staged = await self._receive(request, chunks)
        try:
            published = await self._commit(request, staged)
        finally:
            staged.discard()
        try:
            await self._retention.apply(request.name)
        except Exception:  # retention is housekeeping: the version is published either way
            log.exception(
                "retention after publish failed", extra={"fields": {"model": request.name}}
            )
        return published

    def _check(self, request: PublishRequest) -> None:
        check_name(request.name)
        check_digest(request.digest)
        check_version(request.parent_version, "parent version")
        if not request.manifest.tensors:
            raise InvalidArgument("the manifest is empty; a model has at least one tensor")
        expected = payload_size(request.manifest)
        if expected > self._max_model_bytes:
            raise ResourceExhausted(
                f"model of {expected} bytes exceeds this registry's limit of "
                f"{self._max_model_bytes} bytes"
            )
        if request.size_bytes != expected:
            raise InvalidArgument(
                f"size_bytes {request.size_bytes} does not match the manifest, whose canonical "
                f"payload has {expected} bytes"
            )
        _check_provenance(request.provenance, request.fencing_token)

    async def _check_parent(self, request: PublishRequest) -> None:
        head, _ = await self._store.head(request.name)
        if request.parent_version > head:
            raise NotFound(
                f"parent version {request.parent_version} of model {request.name!r} does not "
                f"exist; its latest version is {head}"
            )

    async def _duplicate(self, request: PublishRequest, version: int) -> Published:
        stored = await self._catalog.get(request.name, version)
        if stored.record.digest != request.digest:
            run = request.provenance
            raise AlreadyExists(
                f"round {run.round} of run {run.run_id} was already published as version "
                f"{version} of model {request.name!r} with digest {stored.record.digest}; "
                f"refusing a different model {request.digest}"
            )
        return Published(stored, duplicate=True)

    async def _receive(self, request: PublishRequest, chunks: AsyncIterator[bytes]) -> StagedBlob:
        check = PayloadCheck(request.manifest, request.size_bytes)
        staged = await asyncio.to_thread(self._blobs.stage)
        pending: asyncio.Task[None] | None = None
        try:
            async for chunk in chunks:
                self._metrics.received(len(chunk))
                if pending is not None:
                    await pending
                # Hash and write this chunk while the next one arrives.
                pending = asyncio.create_task(asyncio.to_thread(_absorb, check, staged, chunk))
            if pending is not None:
                await pending
            check.finish()
            actual = await asyncio.to_thread(staged.seal)
        except BaseException:
            if pending is not None and not pending.done():
                await asyncio.wait([pending])
            staged.discard()
            raise
        if actual != request.digest:
            staged.discard()
            raise DataLoss(
                f"payload hashes to {actual}; the request header says {request.digest}: it was "
                "corrupted on the way or the header is wrong"
            )
        return staged

    async def _commit(self, request: PublishRequest, staged: StagedBlob) -> Published:
        run = request.provenance
        publication = publication_key(run.run_id, run.round) if run.run_id else None
        # Listed first: blob references are counted over the listed models.
        await self._store.add_model(request.name)
        async with self._locks.hold(request.digest):
            await asyncio.to_thread(self._blobs.place, staged, request.digest)
            if self._after_blob_placed is not None:
                self._after_blob_placed()
            try:
                appended = await self._store.append(
                    request.name, self._builder(request), request.digest, publication
                )
            except Exception:
                await self._forget_unreferenced(request.digest)
                raise
            if appended.duplicate:
                await self._forget_unreferenced(request.digest)
        if appended.duplicate:
            return await self._duplicate(request, appended.version)
        stored = await self._catalog.get(request.name, appended.version)
        log.info(
            "model published",
            extra={
                "fields": {
                    "model": request.name,
                    "version": appended.version,
                    "digest": request.digest,
                    "bytes": request.size_bytes,
                    "run_id": run.run_id,
                    "round": run.round,
                }
            },
        )
        return Published(stored, duplicate=False)

    def _builder(self, request: PublishRequest) -> Callable[[int, str], SignedRecord]:
        created = self._clock_ms()

        def build(version: int, previous_digest: str) -> SignedRecord:
            record = VersionRecord(
                name=request.name,
                version=version,
                digest=request.digest,
                size_bytes=request.size_bytes,
                manifest=request.manifest,
                parent_version=request.parent_version,
                previous_digest=previous_digest,
                provenance=request.provenance,
                created_unix_ms=created,
                signer_key_id=self._signer.key_id,
            )
            canonical = record.canonical()
            return SignedRecord(canonical, record_digest(canonical), self._signer.sign(canonical))

        return build

    async def _forget_unreferenced(self, digest: str) -> None:
        """Remove a just-placed blob that no version holds (best effort; else it is an orphan)."""
        try:
            if await self._store.blob_references(digest) == 0:
                await asyncio.to_thread(self._blobs.remove, digest)
        except Exception:
            log.warning(
                "could not remove an unreferenced blob", extra={"fields": {"digest": digest}}
            )


def _absorb(check: PayloadCheck, staged: StagedBlob, chunk: bytes) -> None:
    check.feed(chunk)
    staged.write(chunk)
