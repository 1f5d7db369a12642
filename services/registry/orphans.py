"""Collects blobs no record references (left by a crash between blob and record)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from fedmesh.services.registry.blobs import BlobLocks, BlobStore
from fedmesh.services.registry.versions import VersionStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrphanReport:
    """What a collection removed."""

    blobs: tuple[str, ...]
    staging_files: int


async def collect_orphans(store: VersionStore, blobs: BlobStore, locks: BlobLocks) -> OrphanReport:
    """Remove staging leftovers and unreferenced blobs; run at start, before serving."""
    staging = await asyncio.to_thread(blobs.clear_staging)
    referenced = await store.referenced_blobs()
    removed = []
    for digest in await asyncio.to_thread(lambda: list(blobs.digests())):
        if digest in referenced:
            continue
        async with locks.hold(digest):
            if await store.blob_references(digest) == 0:
                await asyncio.to_thread(blobs.remove, digest)
                removed.append(digest)
    if removed or staging:
        log.info(
            "orphans collected",
            extra={"fields": {"blobs": removed, "staging_files": staging}},
        )
    return OrphanReport(tuple(removed), staging)
