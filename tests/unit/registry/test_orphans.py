"""Orphan collection removes unreferenced blobs and staging leftovers, nothing else."""

from __future__ import annotations

import hashlib
from pathlib import Path

import redis.asyncio as aioredis

from fedmesh.services.registry.blobs import BlobLocks, BlobStore
from fedmesh.services.registry.orphans import collect_orphans
from fedmesh.services.registry.records import SignedRecord
from fedmesh.services.registry.versions import VersionStore


def place(store: BlobStore, data: bytes) -> str:
    staged = store.stage()
    staged.write(data)
    digest = staged.seal()
    store.place(staged, digest)
    return digest


def record(version: int, previous_digest: str) -> SignedRecord:
    canonical = f"v{version}".encode()
    return SignedRecord(canonical, hashlib.sha256(canonical).hexdigest(), b"sig")


async def test_only_unreferenced_blobs_and_staging_files_go(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    blobs = BlobStore(tmp_path)
    versions = VersionStore(redis_client)
    kept = place(blobs, b"referenced")
    orphan = place(blobs, b"orphaned by a crash")
    (tmp_path / ".staging" / "leftover.part").write_bytes(b"half")
    await versions.add_model("m")
    await versions.append("m", record, kept, None)

    report = await collect_orphans(versions, blobs, BlobLocks())

    assert report.blobs == (orphan,)
    assert report.staging_files == 1
    assert list(blobs.digests()) == [kept]
    assert list((tmp_path / ".staging").iterdir()) == []
