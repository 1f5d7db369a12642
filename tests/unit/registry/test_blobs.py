"""The blob directory: staged writes, atomic placement, listing, removal, writability."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from fedmesh.errors import InvalidArgument
from fedmesh.services.registry.blobs import BlobLocks, BlobStore


def staged_blob(store: BlobStore, data: bytes) -> tuple[str, Path]:
    staged = store.stage()
    staged.write(data[:3])
    staged.write(data[3:])
    digest = staged.seal()
    store.place(staged, digest)
    return digest, staged.path


def test_a_placed_blob_is_stored_under_its_digest(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)

    digest, staging_path = staged_blob(store, b"model bytes")

    assert digest == hashlib.sha256(b"model bytes").hexdigest()
    assert store.path_of(digest) == tmp_path / digest[:2] / digest
    assert store.path_of(digest).read_bytes() == b"model bytes"
    assert not staging_path.exists()
    assert list(store.digests()) == [digest]
    assert store.size_of(digest) == len(b"model bytes")
    assert store.hash_of(digest) == digest
    assert store.total_bytes() == len(b"model bytes")


def test_placing_the_same_digest_again_replaces_the_file(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest, _ = staged_blob(store, b"abc")
    store.path_of(digest).write_bytes(b"tampered")

    again, _ = staged_blob(store, b"abc")

    assert again == digest
    assert store.path_of(digest).read_bytes() == b"abc"


def test_a_discarded_staging_file_is_gone(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    staged = store.stage()
    staged.write(b"partial")

    staged.discard()

    assert not staged.path.exists()
    assert list(store.digests()) == []


def test_remove_and_clear_staging(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest, _ = staged_blob(store, b"abc")
    (tmp_path / ".staging" / "1234.part").write_bytes(b"left by a crash")
    (tmp_path / "ab").mkdir(exist_ok=True)
    (tmp_path / "ab" / "notes.txt").write_text("not a blob")

    removed = store.remove(digest)
    removed_again = store.remove(digest)
    cleared = store.clear_staging()

    assert (removed, removed_again, cleared) == (True, False, 1)
    assert list(store.digests()) == []
    assert (tmp_path / "ab" / "notes.txt").exists()


def test_writable_is_false_when_staging_cannot_take_files(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    before = store.writable()
    (tmp_path / ".staging").rmdir()
    (tmp_path / ".staging").write_text("in the way")

    assert (before, store.writable()) == (True, False)


def test_a_path_for_a_non_digest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"^digest '\.\./etc/passwd' is not a SHA-256"):
        BlobStore(tmp_path).path_of("../etc/passwd")


async def test_locks_serialise_holders_of_one_digest_and_are_released() -> None:
    locks = BlobLocks()
    order: list[str] = []

    async def hold(label: str, digest: str) -> None:
        async with locks.hold(digest):
            order.append(f"{label} in")
            await asyncio.sleep(0)
            order.append(f"{label} out")

    await asyncio.gather(hold("a", "x"), hold("b", "x"), hold("c", "y"))

    assert order.index("a out") < order.index("b in")
    assert locks._locks == {}
