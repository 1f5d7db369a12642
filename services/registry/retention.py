"""Retention: keep the last N versions and every aliased one; drop the other blobs.

Records are never deleted, so the chain still verifies: a dropped version is marked
and its blob file removed once no live version of any model holds the same digest.
The mark is written before the file goes, so a crash in between leaves an orphan
file (collected at the next start), never a record pointing at a missing blob.
"""

from __future__ import annotations

import asyncio
import logging

from fedmesh.services.registry.blobs import BlobLocks, BlobStore
from fedmesh.services.registry.chain import RecordCheck, Tampering
from fedmesh.services.registry.metrics import RegistryMetrics
from fedmesh.services.registry.versions import VersionStore

log = logging.getLogger(__name__)


def droppable(head: int, keep: int, aliased: set[int], dropped: set[int]) -> list[int]:
    """Versions to drop now: older than the last ``keep``, not aliased, not dropped yet.

    ``keep`` 0 keeps every version.
    """
    if keep <= 0:
        return []
    return [v for v in range(1, head - keep + 1) if v not in aliased and v not in dropped]


class Retention:
    """Applies the retention policy to one model at a time."""

    def __init__(
        self,
        store: VersionStore,
        blobs: BlobStore,
        locks: BlobLocks,
        check: RecordCheck,
        keep: int,
        metrics: RegistryMetrics,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._locks = locks
        self._check = check
        self._keep = keep
        self._metrics = metrics

    async def apply(self, name: str) -> list[int]:
        """Drop what the policy no longer keeps; return the versions dropped by this call."""
        head, _ = await self._store.head(name)
        aliases = await self._store.aliases(name)
        dropped_before = await self._store.dropped(name)
        victims = droppable(head, self._keep, set(aliases.values()), dropped_before)
        dropped = []
        for version, raw in zip(victims, await self._store.get_many(name, victims), strict=True):
            if raw is None:
                continue
            try:
                digest = self._check.verify(raw, name, version, aliases).record.digest
            except Tampering as exc:
                log.error(
                    "retention skips a tampered version", extra={"fields": {"error": str(exc)}}
                )
                continue
            async with self._locks.hold(digest):
                if await self._store.drop_blob(name, version, digest) != "dropped":
                    continue
                if await self._store.blob_references(digest) == 0:
                    await asyncio.to_thread(self._blobs.remove, digest)
            dropped.append(version)
        if dropped:
            self._metrics.blobs_dropped(len(dropped))
            log.info(
                "retention dropped blobs",
                extra={"fields": {"model": name, "versions": dropped, "keep": self._keep}},
            )
        return dropped
