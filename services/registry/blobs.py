"""Content-addressed blob files: ``<root>/<digest[:2]>/<digest>``, written atomically.

A blob is written to a staging file, fsynced, renamed into place and its directory
fsynced, so a crash leaves either the whole blob or none of it. A placed blob that no
record references is an orphan; :mod:`orphans` collects those.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO

from fedmesh.durable import fsync_dir
from fedmesh.services.registry.names import check_digest, is_digest

_READ_BYTES = 1 << 20
_STAGING = ".staging"


class StagedBlob:
    """A staging file receiving a payload; hashes and counts what it is given."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = path.open("xb")
        self._hasher = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``."""
        if self._file is None:
            raise ValueError("staged blob is already sealed")
        self._file.write(chunk)
        self._hasher.update(chunk)
        self.size += len(chunk)

    def seal(self) -> str:
        """Flush and fsync the file; return the SHA-256 of everything written."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
        return self._hasher.hexdigest()

    def discard(self) -> None:
        """Close and delete the staging file."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.path.unlink(missing_ok=True)


class BlobStore:
    """The blob directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._staging = root / _STAGING
        self._staging.mkdir(parents=True, exist_ok=True)

    def path_of(self, digest: str) -> Path:
        """Where the blob with this digest lives."""
        check_digest(digest)
        return self.root / digest[:2] / digest

    def stage(self) -> StagedBlob:
        """A new staging file."""
        return StagedBlob(self._staging / f"{uuid.uuid4().hex}.part")

    def place(self, staged: StagedBlob, digest: str) -> None:
        """Rename a sealed staging file into place (replacing any copy) and fsync the dirs."""
        target = self.path_of(digest)
        if not target.parent.is_dir():
            target.parent.mkdir()
            fsync_dir(self.root)
        os.replace(staged.path, target)
        fsync_dir(target.parent)

    def size_of(self, digest: str) -> int | None:
        """The blob's size in bytes, or None when it is not stored."""
        try:
            return self.path_of(digest).stat().st_size
        except FileNotFoundError:
            return None

    def open(self, digest: str) -> BinaryIO:
        """Open the blob for reading; FileNotFoundError when it is not stored."""
        return self.path_of(digest).open("rb")

    def hash_of(self, digest: str) -> str:
        """SHA-256 of the stored bytes (to check them against ``digest``)."""
        hasher = hashlib.sha256()
        with self.open(digest) as blob:
            while chunk := blob.read(_READ_BYTES):
                hasher.update(chunk)
        return hasher.hexdigest()

    def remove(self, digest: str) -> bool:
        """Delete the blob; False when it was not there."""
        path = self.path_of(digest)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(path.parent)
        return True

    def digests(self) -> Iterator[str]:
        """Digests of every stored blob (files with other names are left alone)."""
        for shard in sorted(self.root.iterdir()):
            if shard.name == _STAGING or not shard.is_dir():
                continue
            for path in sorted(shard.iterdir()):
                if path.name.startswith(shard.name) and is_digest(path.name):
                    yield path.name

    def clear_staging(self) -> int:
        """Delete staging files left by a crash; only safe while nothing is uploading."""
        removed = 0
        for path in self._staging.iterdir():
            path.unlink(missing_ok=True)
            removed += 1
        return removed

    def writable(self) -> bool:
        """Whether a file can be created, synced and removed in the staging directory."""
        probe = self._staging / f"probe-{uuid.uuid4().hex}"
        try:
            with probe.open("xb") as handle:
                handle.write(b"ok")
                os.fsync(handle.fileno())
            probe.unlink()
        except OSError:
            return False
        return True

    def total_bytes(self) -> int:
        """Bytes held by stored blobs."""
        return sum(self.path_of(d).stat().st_size for d in self.digests())


class BlobLocks:
    """One asyncio lock per digest: placing, referencing and deleting a blob never interleave."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, digest: str) -> AsyncIterator[None]:
        """Hold the lock of ``digest``."""
        lock, users = self._locks.get(digest, (asyncio.Lock(), 0))
        self._locks[digest] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[digest]
            if users == 1:
                del self._locks[digest]
            else:
                self._locks[digest] = (lock, users - 1)
