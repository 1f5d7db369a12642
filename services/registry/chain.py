"""Verification of records and of the hash chain; tampering raises DATA_LOSS and an alarm.

A record is intact when its canonical bytes hash to the stored record digest, carry
this registry's signature and describe the version they are stored as. The chain is
intact when every version's ``previous_digest`` is the record digest of the version
before it (empty for version 1), the head pointer names the head record, and every
blob still kept hashes to its record's digest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from fedmesh.errors import DataLoss, FedmeshError, NotFound
from fedmesh.services.registry.blobs import BlobStore
from fedmesh.services.registry.metrics import RegistryMetrics
from fedmesh.services.registry.records import StoredVersion, VersionRecord, record_digest
from fedmesh.services.registry.signing import RecordSigner
from fedmesh.services.registry.versions import RawVersion, VersionStore

log = logging.getLogger(__name__)

_BATCH = 256


class Tampering(DataLoss):
    """A version's record or blob failed verification."""

    def __init__(self, name: str, version: int, detail: str) -> None:
        super().__init__(detail)
        self.name = name
        self.version = version


class ChainAlarm(Protocol):
    """Where tampering is reported (the alerting service)."""

    async def raise_alarm(self, tampering: Tampering) -> None:
        """Report ``tampering``; must not raise."""


class RecordCheck:
    """Verifies stored records and reports tampering."""

    def __init__(
        self, signer: RecordSigner, alarm: ChainAlarm | None, metrics: RegistryMetrics
    ) -> None:
        self._signer = signer
        self._alarm = alarm
        self._metrics = metrics

    def verify(
        self, raw: RawVersion, name: str, version: int, aliases: Mapping[str, int]
    ) -> StoredVersion:
        """The verified version; Tampering when its record was altered."""
        signed = raw.signed
        actual = record_digest(signed.canonical)
        if actual != signed.record_digest:
            raise Tampering(
                name,
                version,
                f"record of version {version} of model {name!r} was altered: its bytes hash to "
                f"{actual}, the stored record digest is {signed.record_digest}",
            )
        if not self._signer.verify(signed.signature, signed.canonical):
            raise Tampering(
                name,
                version,
                f"record of version {version} of model {name!r} does not carry a valid "
                f"signature of this registry's key {self._signer.key_id}",
            )
        try:
            record = VersionRecord.from_canonical(signed.canonical)
        except (ValueError, KeyError, TypeError, FedmeshError):
            raise Tampering(
                name, version, f"record of version {version} of model {name!r} is not canonical"
            ) from None
        if (record.name, record.version) != (name, version):
            raise Tampering(
                name,
                version,
                f"record stored as version {version} of model {name!r} describes version "
                f"{record.version} of {record.name!r}",
            )
        return StoredVersion(
            record=record,
            record_digest=signed.record_digest,
            signature=signed.signature,
            evaluation=raw.evaluation,
            blob_dropped=raw.blob_dropped,
            aliases=tuple(sorted(a for a, v in aliases.items() if v == version)),
        )

    @contextlib.asynccontextmanager
    async def alarming(self) -> AsyncIterator[None]:
        """Report any Tampering raised inside, then let it propagate."""
        try:
            yield
        except Tampering as tampering:
            self._metrics.tampering(tampering.name)
            log.error(
                "model tampering detected",
                extra={
                    "fields": {
                        "model": tampering.name,
                        "version": tampering.version,
                        "detail": str(tampering),
                    }
                },
            )
            if self._alarm is not None:
                await self._alarm.raise_alarm(tampering)
            raise


@dataclass(frozen=True)
class ChainReport:
    """What a full verification checked."""

    versions_checked: int
    head_digest: str
    blobs_checked: int


class ChainVerifier:
    """Walks a model's chain back to version 1, re-hashing records and kept blobs."""

    def __init__(self, store: VersionStore, blobs: BlobStore, check: RecordCheck) -> None:
        self._store = store
        self._blobs = blobs
        self._check = check

    async def verify(self, name: str, version: int = 0) -> ChainReport:
        """Verify ``version`` (0: the head) and every version before it."""
        async with self._check.alarming():
            return await self._verify(name, version)

    async def _verify(self, name: str, version: int) -> ChainReport:
        head, head_digest = await self._store.head(name)
        if head == 0:
            raise NotFound(f"model {name!r} has no versions")
        target = version or head
        if target > head:
            raise NotFound(f"model {name!r} has no version {target}; its latest is {head}")
        aliases = await self._store.aliases(name)
        expected = head_digest if target == head else None
        top_digest = ""
        blobs_checked = 0
        for top in range(target, 0, -_BATCH):
            numbers = list(range(top, max(top - _BATCH, 0), -1))
            for number, raw in zip(numbers, await self._store.get_many(name, numbers), strict=True):
                if raw is None:
                    raise Tampering(
                        name, number, f"record of version {number} of model {name!r} is missing"
                    )
                stored = self._check.verify(raw, name, number, aliases)
                if expected is not None and stored.record_digest != expected:
                    raise Tampering(
                        name,
                        number,
                        f"the chain of model {name!r} is broken at version {number}: the "
                        f"version after it (or the head) links to record {expected}, but "
                        f"version {number}'s record digest is {stored.record_digest}",
                    )
                top_digest = top_digest or stored.record_digest
                expected = stored.record.previous_digest
                if not stored.blob_dropped:
                    await self._check_blob(stored)
                    blobs_checked += 1
        if expected:
            raise Tampering(
                name, 1, f"version 1 of model {name!r} links to a previous record {expected}"
            )
        return ChainReport(target, top_digest, blobs_checked)

    async def _check_blob(self, stored: StoredVersion) -> None:
        record = stored.record
        try:
            actual = await asyncio.to_thread(self._blobs.hash_of, record.digest)
        except FileNotFoundError:
            raise Tampering(
                record.name,
                record.version,
                f"blob {record.digest} of version {record.version} of model {record.name!r} "
                "is missing from the blob store",
            ) from None
        if actual != record.digest:
            raise Tampering(
                record.name,
                record.version,
                f"blob of version {record.version} of model {record.name!r} was altered: it "
                f"hashes to {actual}, the record says {record.digest}",
            )
