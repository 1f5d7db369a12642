"""Typed async client of the model registry: publish, download, versions, aliases, chain.

Failures come back as :mod:`fedmesh.errors` (``NotFound``, ``DataLoss``…) carrying the
server's message; downloads check the SHA-256 of what arrived against the version's
digest, and :meth:`RegistryClient.download_to` resumes after a cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import grpc
import torch

from fedmesh.errors import DataLoss, FedmeshError, Unavailable
from fedmesh.proto.common.v1 import common_pb2
from fedmesh.proto.registry.v1 import registry_pb2 as pb
from fedmesh.proto.registry.v1 import registry_pb2_grpc as pb_grpc
from fedmesh.rpc import CHUNK_BYTES, DEFAULT_TIMEOUT_S
from fedmesh.rpc.errors import STATUS_OF
from fedmesh.telemetry import current_carrier
from fedmesh.tensors import (
    Manifest,
    decode,
    digest_tensors,
    encode_header,
    header_length,
    iter_payload,
    manifest_of,
    parse_header,
)

DEFAULT_TRANSFER_TIMEOUT_S = 900.0
_DOMAIN_ERRORS: dict[grpc.StatusCode, type[FedmeshError]] = {
    code: cls for cls, code in STATUS_OF.items()
}
_DOMAIN_ERRORS[grpc.StatusCode.DEADLINE_EXCEEDED] = Unavailable
_RESUMABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_FILE_READ_BYTES = 1 << 20

Progress = Callable[[int, int], None]
"""Called with (bytes held so far, total bytes) as a download advances."""


@contextlib.contextmanager
def _domain_errors() -> Iterator[None]:
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        error = _DOMAIN_ERRORS.get(exc.code())
        if error is None:
            raise
        raise error(exc.details() or exc.code().name) from exc


@dataclass(frozen=True)
class Provenance:
    """What produced a version: run, round, rule, the updates used and refused, privacy."""

    run_id: str = ""
    round: int = 0
    rule: common_pb2.AggregationRule.ValueType = common_pb2.AGGREGATION_RULE_UNSPECIFIED
    participant_update_digests: tuple[str, ...] = ()
    rejected: Mapping[str, str] = field(default_factory=dict)
    epsilon_spent: float = 0.0
    delta: float = 0.0


@dataclass(frozen=True)
class VersionPage:
    """One page of versions, newest first; an empty token means the last page."""

    versions: list[pb.ModelVersion]
    next_page_token: str


@dataclass(frozen=True)
class DownloadResult:
    """A finished download: the version, where it is, and how much this call fetched."""

    version: pb.ModelVersion
    path: Path
    resumed_from: int
    bytes_received: int


def _pieces(chunk: bytes, size: int) -> Iterator[bytes]:
    if len(chunk) <= size:
        yield chunk
        return
    view = memoryview(chunk)
    for start in range(0, len(chunk), size):
        yield bytes(view[start : start + size])


async def _file_chunks(path: Path, size: int) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while chunk := await asyncio.to_thread(source.read, size):
            yield chunk


def _file_header(path: Path) -> tuple[Manifest, str, int]:
    """Manifest, SHA-256 and size of a canonical payload file, reading it once."""
    hasher = hashlib.sha256()
    with path.open("rb") as source:
        prefix = source.read(8)
        head = prefix + source.read(header_length(prefix))
        manifest = parse_header(head).manifest
        hasher.update(head)
        while chunk := source.read(_FILE_READ_BYTES):
            hasher.update(chunk)
        size = source.tell()
    return manifest, hasher.hexdigest(), size


def _resume_point(partial: Path, size: int, hasher: hashlib._Hash) -> int:
    """Bytes already in ``partial`` (hashed into ``hasher``); a too-long file starts over."""
    if not partial.exists() or partial.stat().st_size > size:
        partial.write_bytes(b"")
        return 0
    with partial.open("rb") as held:
        while chunk := held.read(_FILE_READ_BYTES):
            hasher.update(chunk)
        return held.tell()


def _append(out: BinaryIO, hasher: hashlib._Hash, chunk: bytes) -> None:
    out.write(chunk)
    hasher.update(chunk)


def _finish_file(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())


def _land(partial: Path, path: Path) -> None:
    """Rename the checked file into place and make the rename durable."""
    os.replace(partial, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class RegistryClient:
    """The registry's RPCs as typed async methods over one channel."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        transfer_timeout: float = DEFAULT_TRANSFER_TIMEOUT_S,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self._stub = pb_grpc.RegistryServiceStub(channel)
        self._timeout = timeout
        self._transfer_timeout = transfer_timeout
        self._chunk_bytes = chunk_bytes

    async def publish(
        self,
        name: str,
        chunks: AsyncIterable[bytes] | Iterable[bytes],
        *,
        manifest: Manifest,
        digest: str,
        size_bytes: int,
        parent_version: int = 0,
        provenance: Provenance | None = None,
        fencing_token: int = 0,
    ) -> pb.ModelVersion:
        """Stream a canonical payload given in chunks of any size; return its version.

        A publish with a run id is idempotent by (run, round): a retry returns the
        version the first attempt made.
        """
        p = provenance or Provenance()
        header = pb.PublishHeader(
            name=name,
            parent_version=parent_version,
            run_id=p.run_id,
            round=p.round,
            rule=p.rule,
            participant_update_digests=list(p.participant_update_digests),
            rejected=[pb.RejectedNode(node_id=n, reason=r) for n, r in p.rejected.items()],
            epsilon_spent=p.epsilon_spent,
            delta=p.delta,
            manifest=common_pb2.TensorManifest(
                tensors=[
                    common_pb2.TensorSpec(name=s.name, dtype=s.dtype, shape=list(s.shape))
                    for s in manifest.tensors
                ]
            ),
            digest=digest,
            size_bytes=size_bytes,
            fencing_token=fencing_token,
            trace_context=common_pb2.TraceContext(carrier=current_carrier()),
        )

        async def requests() -> AsyncIterator[pb.PublishModelRequest]:
            yield pb.PublishModelRequest(header=header)
            if isinstance(chunks, AsyncIterable):
                async for chunk in chunks:
                    for piece in _pieces(chunk, self._chunk_bytes):
                        yield pb.PublishModelRequest(chunk=piece)
            else:
                for chunk in chunks:
                    for piece in _pieces(chunk, self._chunk_bytes):
                        yield pb.PublishModelRequest(chunk=piece)

        with _domain_errors():
            response = await self._stub.PublishModel(requests(), timeout=self._transfer_timeout)
        return response.version

    async def publish_tensors(
        self,
        name: str,
        tensors: Mapping[str, torch.Tensor],
        *,
        parent_version: int = 0,
        provenance: Provenance | None = None,
        fencing_token: int = 0,
    ) -> pb.ModelVersion:
        """Publish a state dict in the canonical layout (digest computed here)."""
        manifest = manifest_of(tensors)
        return await self.publish(
            name,
            iter_payload(tensors, self._chunk_bytes),
            manifest=manifest,
            digest=digest_tensors(tensors),
            size_bytes=len(encode_header(manifest)) + manifest.nbytes,
            parent_version=parent_version,
            provenance=provenance,
            fencing_token=fencing_token,
        )

    async def publish_file(
        self,
        name: str,
        path: Path,
        *,
        parent_version: int = 0,
        provenance: Provenance | None = None,
        fencing_token: int = 0,
    ) -> pb.ModelVersion:
        """Publish a canonical safetensors file, streamed from disk, never held in memory."""
        manifest, digest, size = await asyncio.to_thread(_file_header, path)
        return await self.publish(
            name,
            _file_chunks(path, self._chunk_bytes),
            manifest=manifest,
            digest=digest,
            size_bytes=size,
            parent_version=parent_version,
            provenance=provenance,
            fencing_token=fencing_token,
        )

    async def download(
        self, name: str, version: int = 0, alias: str = "", offset: int = 0
    ) -> bytes:
        """The model's bytes from ``offset`` (0: all of them, checked against the digest).

        A tail (offset > 0) is checked by the server, which re-hashes the whole blob and
        ends the stream with DATA_LOSS when it does not match.
        """
        request = pb.DownloadModelRequest(
            name=name, version=version, alias=alias, offset=offset, chunk_bytes=self._chunk_bytes
        )
        meta: pb.ModelVersion | None = None
        parts: list[bytes] = []
        with _domain_errors():
            async for response in self._stub.DownloadModel(request, timeout=self._transfer_timeout):
                if response.WhichOneof("item") == "version":
                    meta = response.version
                else:
                    parts.append(response.chunk)
        data = b"".join(parts)
        if meta is None or len(data) != meta.size_bytes - offset:
            raise DataLoss(
                f"download of {name!r} ended after {len(data)} bytes from offset {offset}; "
                f"expected {meta.size_bytes - offset if meta else 'a version first'}"
            )
        if offset == 0 and hashlib.sha256(data).hexdigest() != meta.ref.digest:
            raise DataLoss(
                f"downloaded bytes of version {meta.ref.version} of {name!r} do not hash to "
                f"its digest {meta.ref.digest}"
            )
        return data

    async def download_tensors(
        self, name: str, version: int = 0, alias: str = ""
    ) -> tuple[pb.ModelVersion, dict[str, torch.Tensor]]:
        """A version's record and its tensors (decoded from safetensors, never unpickled)."""
        meta = await self.get_version(name, version, alias)
        data = await self.download(name, meta.ref.version)
        return meta, decode(data)

    async def download_to(
        self,
        path: Path,
        name: str,
        version: int = 0,
        alias: str = "",
        *,
        on_progress: Progress | None = None,
        attempts: int = 5,
    ) -> DownloadResult:
        """Stream a version to ``path`` without holding it in memory, resuming after cuts.

        Bytes land in ``<path>.<digest prefix>.partial``; a later call for the same
        version continues from its end. The file is renamed to ``path`` only once its
        SHA-256 matches the version's digest. ``attempts`` bounds retries in a row that
        bring no new bytes.
        """
        meta = await self.get_version(name, version, alias)
        digest, size = meta.ref.digest, meta.size_bytes
        partial = path.with_name(f"{path.name}.{digest[:16]}.partial")
        hasher = hashlib.sha256()
        offset = await asyncio.to_thread(_resume_point, partial, size, hasher)
        resumed_from = offset
        failures = 0
        with partial.open("ab") as out:
            while offset < size:
                before = offset
                try:
                    offset = await self._fetch_into(out, hasher, meta, offset, on_progress)
                except grpc.aio.AioRpcError as exc:
                    offset = out.tell()
                    failures = 0 if offset > before else failures + 1
                    if exc.code() not in _RESUMABLE or failures >= attempts:
                        with _domain_errors():
                            raise
                    await asyncio.sleep(min(0.1 * 2**failures, 2.0))
                    continue
                if offset == before:
                    raise DataLoss(f"download of {name!r} stopped at byte {offset} of {size}")
            await asyncio.to_thread(_finish_file, out)
        if hasher.hexdigest() != digest:
            partial.unlink()
            raise DataLoss(
                f"downloaded file of version {meta.ref.version} of {name!r} does not hash to "
                f"its digest {digest}; the partial file was removed"
            )
        await asyncio.to_thread(_land, partial, path)
        return DownloadResult(meta, path, resumed_from, size - resumed_from)

    async def _fetch_into(
        self,
        out: BinaryIO,
        hasher: hashlib._Hash,
        meta: pb.ModelVersion,
        offset: int,
        on_progress: Progress | None,
    ) -> int:
        request = pb.DownloadModelRequest(
            name=meta.ref.name,
            version=meta.ref.version,
            offset=offset,
            chunk_bytes=self._chunk_bytes,
        )
        # Errors stay raw: download_to resumes after the resumable ones. Each chunk is
        # hashed and written in a worker thread while the next one is received.
        pending: asyncio.Task[None] | None = None
        try:
            async for response in self._stub.DownloadModel(request, timeout=self._transfer_timeout):
                if response.WhichOneof("item") == "version":
                    if response.version.ref.digest != meta.ref.digest:
                        raise DataLoss(
                            f"version {meta.ref.version} of {meta.ref.name!r} changed digest "
                            "during the download"
                        )
                    continue
                chunk = response.chunk
                if pending is not None:
                    await pending
                pending = asyncio.create_task(asyncio.to_thread(_append, out, hasher, chunk))
                offset += len(chunk)
                if on_progress is not None:
                    on_progress(offset, meta.size_bytes)
        finally:
            if pending is not None:
                await pending
        return offset

    async def get_version(self, name: str, version: int = 0, alias: str = "") -> pb.ModelVersion:
        """One version by number, by alias, or the latest (both 0/empty)."""
        with _domain_errors():
            response = await self._stub.GetModelVersion(
                pb.GetModelVersionRequest(name=name, version=version, alias=alias),
                timeout=self._timeout,
            )
        return response.version

    async def list_versions(
        self, name: str, page_size: int = 0, page_token: str = ""
    ) -> VersionPage:
        """One page of a model's versions, newest first."""
        with _domain_errors():
            response = await self._stub.ListModelVersions(
                pb.ListModelVersionsRequest(name=name, page_size=page_size, page_token=page_token),
                timeout=self._timeout,
            )
        return VersionPage(list(response.versions), response.next_page_token)

    async def lineage(self, name: str, version: int = 0) -> list[pb.ModelVersion]:
        """The version and its ancestors by parent, newest first."""
        with _domain_errors():
            response = await self._stub.GetLineage(
                pb.GetLineageRequest(name=name, version=version), timeout=self._timeout
            )
        return list(response.versions)

    async def verify_chain(self, name: str, version: int = 0) -> pb.VerifyChainResponse:
        """Verify records, links and kept blobs back to version 1; DataLoss names a tampered one."""
        with _domain_errors():
            return await self._stub.VerifyChain(
                pb.VerifyChainRequest(name=name, version=version),
                timeout=self._transfer_timeout,
            )

    async def record_evaluation(
        self, name: str, version: int, metrics: common_pb2.EvaluationMetrics
    ) -> pb.ModelVersion:
        """Attach evaluation metrics to a version (the promotion gate reads them)."""
        with _domain_errors():
            response = await self._stub.RecordEvaluation(
                pb.RecordEvaluationRequest(name=name, version=version, metrics=metrics),
                timeout=self._timeout,
            )
        return response.version

    async def promote(
        self, name: str, version: int, alias: str = "production", reason: str = ""
    ) -> pb.ModelVersion:
        """Point ``alias`` at ``version``; production only through the evaluation gate."""
        with _domain_errors():
            response = await self._stub.PromoteModel(
                pb.PromoteModelRequest(name=name, version=version, alias=alias, reason=reason),
                timeout=self._timeout,
            )
        return response.version

    async def rollback(self, name: str, version: int = 0, reason: str = "") -> pb.ModelVersion:
        """Move production back to an earlier version (0: the last earlier one it held)."""
        with _domain_errors():
            response = await self._stub.RollbackModel(
                pb.RollbackModelRequest(name=name, version=version, reason=reason),
                timeout=self._timeout,
            )
        return response.version

    async def list_models(self) -> list[pb.ModelSummary]:
        """Every model with its latest version and aliases."""
        with _domain_errors():
            response = await self._stub.ListModels(pb.ListModelsRequest(), timeout=self._timeout)
        return list(response.models)

    async def alias_moves(self, name: str, alias: str = "") -> list[pb.AliasMove]:
        """Recorded alias moves of a model, newest first."""
        with _domain_errors():
            response = await self._stub.ListAliasMoves(
                pb.ListAliasMovesRequest(name=name, alias=alias), timeout=self._timeout
            )
        return list(response.moves)

    async def status(self) -> pb.GetStatusResponse:
        """Counts and the public key that verifies record signatures."""
        with _domain_errors():
            return await self._stub.GetStatus(pb.GetStatusRequest(), timeout=self._timeout)
