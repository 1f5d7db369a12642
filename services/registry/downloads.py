"""Streams a blob from an offset, re-hashing it on the way: corrupt bytes end in DATA_LOSS.

On a resume the prefix before the offset is hashed from disk first, so the check
always covers the whole blob; the last message of a corrupt blob is an error, never
a clean end of stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import BinaryIO

from fedmesh.errors import InvalidArgument, NotFound
from fedmesh.services.registry.blobs import BlobStore
from fedmesh.services.registry.chain import RecordCheck, Tampering
from fedmesh.services.registry.metrics import RegistryMetrics
from fedmesh.services.registry.records import StoredVersion

MIN_CHUNK_BYTES = 4 << 10
MAX_CHUNK_BYTES = 4 << 20
_HASH_BYTES = 1 << 20


def _hash_prefix(blob: BinaryIO, hasher: hashlib._Hash, length: int) -> None:
    left = length
    while left:
        data = blob.read(min(_HASH_BYTES, left))
        if not data:
            return
        hasher.update(data)
        left -= len(data)


def _read(blob: BinaryIO, hasher: hashlib._Hash, length: int) -> bytes:
    data = blob.read(length)
    hasher.update(data)
    return data


class BlobStream:
    """An open blob positioned at an offset; iterate :meth:`chunks` once."""

    def __init__(
        self,
        version: StoredVersion,
        blob: BinaryIO,
        offset: int,
        chunk_bytes: int,
        metrics: RegistryMetrics,
    ) -> None:
        self._version = version
        self._metrics = metrics
        self._blob = blob
        self._offset = offset
        self._chunk_bytes = chunk_bytes

    async def chunks(self) -> AsyncIterator[bytes]:
        """The bytes from the offset to the end; Tampering at the end when they do not hash."""
        record = self._version.record
        hasher = hashlib.sha256()
        await asyncio.to_thread(_hash_prefix, self._blob, hasher, self._offset)
        left = record.size_bytes - self._offset
        read = asyncio.create_task(self._next(hasher, left))
        try:
            while left:
                chunk = await read
                if not chunk:
                    break
                left -= len(chunk)
                # Read the next chunk from disk while this one is being sent.
                read = asyncio.create_task(self._next(hasher, left))
                self._metrics.sent(len(chunk))
                yield chunk
        finally:
            if not read.done():
                await asyncio.wait([read])
        if left or hasher.hexdigest() != record.digest:
            raise Tampering(
                record.name,
                record.version,
                f"blob of version {record.version} of model {record.name!r} was altered: it "
                f"does not hash to the record's digest {record.digest}",
            )

    async def _next(self, hasher: hashlib._Hash, left: int) -> bytes:
        if not left:
            return b""
        return await asyncio.to_thread(_read, self._blob, hasher, min(self._chunk_bytes, left))


class BlobStreamer:
    """Opens verified streams of version blobs."""

    def __init__(self, blobs: BlobStore, check: RecordCheck, metrics: RegistryMetrics) -> None:
        self._blobs = blobs
        self._check = check
        self._metrics = metrics

    @contextlib.asynccontextmanager
    async def open(
        self, version: StoredVersion, offset: int, chunk_bytes: int
    ) -> AsyncIterator[BlobStream]:
        """Check the range, open the blob, and report tampering found while streaming."""
        record = version.record
        if not MIN_CHUNK_BYTES <= chunk_bytes <= MAX_CHUNK_BYTES:
            raise InvalidArgument(
                f"chunk_bytes {chunk_bytes} is out of range; expected 0 (default) or "
                f"{MIN_CHUNK_BYTES}..{MAX_CHUNK_BYTES}"
            )
        if not 0 <= offset <= record.size_bytes:
            raise InvalidArgument(
                f"offset {offset} is outside version {record.version} of model "
                f"{record.name!r}, which has {record.size_bytes} bytes"
            )
        if version.blob_dropped:
            raise NotFound(
                f"blob of version {record.version} of model {record.name!r} was deleted by "
                "retention; its record remains"
            )
        async with self._check.alarming():
            try:
                blob = self._blobs.open(record.digest)
            except FileNotFoundError:
                raise Tampering(
                    record.name,
                    record.version,
                    f"blob {record.digest} of version {record.version} of model "
                    f"{record.name!r} is missing from the blob store",
                ) from None
            try:
                yield BlobStream(version, blob, offset, chunk_bytes, self._metrics)
            finally:
                blob.close()
