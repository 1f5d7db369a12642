"""The update spool: every accepted update is on disk, fsynced, before its receipt exists.

Layout under the spool directory::

    incoming/<random>.part                         an update still streaming in
    rounds/<run>/<round>/<node>/<digest>.update    an accepted update (canonical payload)

Run and node ids are stored base64url-encoded so that any id is a safe file name.
An update smaller than the memory threshold is also kept in memory, so a round
of small updates aggregates without touching the disk; a larger one is read
back memory-mapped, so a round larger than memory still aggregates.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import mmap
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from fedmesh.durable import fsync_dir
from fedmesh.errors import DataLoss
from fedmesh.services.aggregator.update import Chunk

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_SUFFIX = ".update"
# fdatasync while streaming, so the final fsync before the receipt has little left to do.
_SYNC_EVERY_BYTES = 64 << 20
_HASH_BLOCK_BYTES = 4 << 20


@dataclass(frozen=True, order=True)
class SpoolKey:
    """An update by its natural key: run, round, node and the digest of its payload."""

    run_id: str
    round_no: int
    node_id: str
    digest: str


def _encode(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def _decode(part: str) -> str:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode()


def _make_dirs_durably(path: Path) -> None:
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        fsync_dir(directory.parent)


class SpoolWriter:
    """One update streaming into a temporary spool file; call it from one thread at a time."""

    def __init__(self, path: Path, expected_bytes: int, keep_in_memory: bool) -> None:
        self._path = path
        self._file = path.open("xb", buffering=0)
        self._expected = expected_bytes
        self._memory: bytearray | None = bytearray() if keep_in_memory else None
        self._written = 0
        self._unsynced = 0

    @property
    def path(self) -> Path:
        """The temporary file."""
        return self._path

    @property
    def written(self) -> int:
        """Bytes written so far."""
        return self._written

    @property
    def memory(self) -> bytearray | None:
        """The bytes kept in memory, when the update is below the threshold."""
        return self._memory

    def write(self, chunk: Chunk) -> None:
        """Append a chunk (blocking I/O: run it in a worker thread)."""
        if self._written == 0:
            # Reserving the extent up front makes each write cheaper; an optimisation only.
            with contextlib.suppress(OSError):
                os.posix_fallocate(self._file.fileno(), 0, self._expected)
        view = memoryview(chunk)
        while view:
            view = view[self._file.write(view) :]
        if self._memory is not None:
            self._memory += chunk
        self._written += len(chunk)
        self._unsynced += len(chunk)
        if self._unsynced >= _SYNC_EVERY_BYTES:
            os.fdatasync(self._file.fileno())
            self._unsynced = 0

    def seal(self) -> None:
        """Flush the file to stable storage and close it (blocking)."""
        os.fsync(self._file.fileno())
        self._file.close()

    def discard(self) -> None:
        """Close and delete the temporary file: nothing of the update stays behind."""
        self._file.close()
        self._path.unlink(missing_ok=True)
        self._memory = None


class SpooledUpdate:
    """Read access to one spooled payload: memory, or a read-only memory map of its file."""

    def __init__(self, buffer: memoryview, mapping: mmap.mmap | None = None) -> None:
        self._buffer = buffer
        self._mapping = mapping

    @property
    def buffer(self) -> memoryview:
        """The canonical payload bytes."""
        return self._buffer

    def close(self) -> None:
        """Release the mapping (views taken from ``buffer`` must be gone by now)."""
        self._buffer.release()
        if self._mapping is not None:
            self._mapping.close()

    def __enter__(self) -> SpooledUpdate:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class UpdateSpool:
    """Durable storage of accepted updates, indexed by `SpoolKey`."""

    def __init__(self, root: Path, memory_threshold_bytes: int) -> None:
        self._root = root
        self._threshold = memory_threshold_bytes
        self._sizes: dict[SpoolKey, int] = {}
        self._memory: dict[SpoolKey, bytearray] = {}
        _make_dirs_durably(self._incoming)
        _make_dirs_durably(self._rounds)

    @property
    def root(self) -> Path:
        """The spool directory."""
        return self._root

    @property
    def _incoming(self) -> Path:
        return self._root / "incoming"

    @property
    def _rounds(self) -> Path:
        return self._root / "rounds"

    def round_dir(self, run_id: str, round_no: int) -> Path:
        """The directory holding one round's updates."""
        return self._rounds / _encode(run_id) / str(round_no)

    def path_of(self, key: SpoolKey) -> Path:
        """The file of an accepted update."""
        return (
            self.round_dir(key.run_id, key.round_no) / _encode(key.node_id) / (key.digest + _SUFFIX)
        )

    def scratch_path(self, suffix: str) -> Path:
        """A fresh path for a transient file (a downloaded base model), cleared on restart."""
        return self._incoming / f"{uuid.uuid4().hex}{suffix}"

    def begin(self, expected_bytes: int) -> SpoolWriter:
        """Start receiving an update of ``expected_bytes`` into a temporary file."""
        path = self._incoming / f"{uuid.uuid4().hex}.part"
        return SpoolWriter(path, expected_bytes, keep_in_memory=expected_bytes < self._threshold)

    async def commit(self, writer: SpoolWriter, key: SpoolKey) -> bool:
        """Make a fully received, verified update durable under ``key``.

        Returns True when this call created the entry, False when the same update
        (same key, so same digest) was already spooled; the copy is then dropped.
        """
        created = await asyncio.to_thread(self._place, writer, key)
        if created:
            self._sizes[key] = writer.written
            if writer.memory is not None:
                self._memory[key] = writer.memory
        return created

    def _place(self, writer: SpoolWriter, key: SpoolKey) -> bool:
        target = self.path_of(key)
        if target.exists():
            writer.discard()
            return False
        writer.seal()
        _make_dirs_durably(target.parent)
        os.replace(writer.path, target)
        fsync_dir(target.parent)
        return True

    def contains(self, key: SpoolKey) -> bool:
        """Whether the update is spooled."""
        return key in self._sizes

    def spooled_keys(self) -> list[SpoolKey]:
        """Every spooled update, sorted."""
        return sorted(self._sizes)

    def size_of(self, key: SpoolKey) -> int:
        """The payload size of a spooled update."""
        return self._sizes[key]

    @property
    def count(self) -> int:
        """Number of spooled updates."""
        return len(self._sizes)

    @property
    def total_bytes(self) -> int:
        """Bytes of all spooled updates."""
        return sum(self._sizes.values())

    def open(self, key: SpoolKey) -> SpooledUpdate:
        """Read a spooled update; DataLoss when its data is gone."""
        held = self._memory.get(key)
        if held is not None:
            return SpooledUpdate(memoryview(held))
        try:
            with self.path_of(key).open("rb") as file:
                mapping = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        except (FileNotFoundError, ValueError):
            raise DataLoss(
                f"the spooled update {key.digest} of node {key.node_id!r} for round "
                f"{key.round_no} of run {key.run_id} is missing from {self._root}"
            ) from None
        return SpooledUpdate(memoryview(mapping), mapping)

    async def verify(self, key: SpoolKey) -> bool:
        """Whether the file of ``key`` exists and hashes to its digest."""
        return await asyncio.to_thread(self._hash_matches, key)

    def _hash_matches(self, key: SpoolKey) -> bool:
        hasher = hashlib.sha256()
        try:
            with self.path_of(key).open("rb") as file:
                while block := file.read(_HASH_BLOCK_BYTES):
                    hasher.update(block)
        except FileNotFoundError:
            return False
        return hasher.hexdigest() == key.digest

    async def remove(self, key: SpoolKey) -> None:
        """Forget an update and delete its file."""
        self._sizes.pop(key, None)
        self._memory.pop(key, None)
        await asyncio.to_thread(self.path_of(key).unlink, True)

    async def remove_round(self, run_id: str, round_no: int) -> None:
        """Forget every update of a round and delete its directory."""
        for key in [k for k in self._sizes if (k.run_id, k.round_no) == (run_id, round_no)]:
            self._sizes.pop(key)
            self._memory.pop(key, None)
        await asyncio.to_thread(shutil.rmtree, self.round_dir(run_id, round_no), True)

    def rescan(self) -> list[Path]:
        """Rebuild the index from the files on disk; return the files it could not read.

        Memory copies are dropped: after a restart only the disk is trusted.
        """
        self._sizes.clear()
        self._memory.clear()
        strays = []
        for path in sorted(self._rounds.glob("*/*/*/*")):
            key = self._key_of(path)
            if key is None:
                strays.append(path)
            else:
                self._sizes[key] = path.stat().st_size
        return strays

    def _key_of(self, path: Path) -> SpoolKey | None:
        run_part, round_part, node_part = path.parts[-4:-1]
        digest = path.name.removesuffix(_SUFFIX)
        if not (path.is_file() and path.name.endswith(_SUFFIX) and _DIGEST.match(digest)):
            return None
        if not round_part.isdigit():
            return None
        try:
            key = SpoolKey(_decode(run_part), int(round_part), _decode(node_part), digest)
        except (binascii.Error, UnicodeDecodeError):
            return None
        return key if self.path_of(key) == path else None

    def prune_empty_dirs(self) -> None:
        """Remove run, round and node directories left empty."""
        for depth in ("*/*/*", "*/*", "*"):
            for directory in self._rounds.glob(depth):
                if directory.is_dir() and not any(directory.iterdir()):
                    directory.rmdir()

    def clear_incoming(self) -> int:
        """Delete partial uploads left by a crash; return how many there were."""
        removed = 0
        for path in self._incoming.iterdir():
            path.unlink(missing_ok=True)
            removed += 1
        return removed

    def iter_round(self, run_id: str, round_no: int) -> Iterator[SpoolKey]:
        """The spooled updates of one round, sorted."""
        for key in self.spooled_keys():
            if (key.run_id, key.round_no) == (run_id, round_no):
                yield key
