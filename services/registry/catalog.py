"""Reads: resolve a version (number, alias or latest), page, walk lineage, summarise."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fedmesh.errors import InvalidArgument, NotFound
from fedmesh.services.registry.blobs import BlobStore
from fedmesh.services.registry.chain import RecordCheck, Tampering
from fedmesh.services.registry.names import check_alias, check_name, check_version
from fedmesh.services.registry.records import StoredVersion
from fedmesh.services.registry.signing import RecordSigner
from fedmesh.services.registry.versions import VersionStore

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class ModelSummary:
    """One model: its latest version and its aliases."""

    name: str
    latest_version: int
    aliases: dict[str, int]


@dataclass(frozen=True)
class RegistryStatus:
    """Counts and the public half of the signing key."""

    models: int
    versions: int
    blob_bytes: int
    signing_public_key: bytes
    signing_key_id: str


class Catalog:
    """Verified reads of versions."""

    def __init__(
        self, store: VersionStore, blobs: BlobStore, check: RecordCheck, signer: RecordSigner
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._check = check
        self._signer = signer

    async def resolve(self, name: str, version: int = 0, alias: str = "") -> int:
        """The version number meant by (version, alias): a number, an alias, or the latest."""
        check_name(name)
        check_version(version)
        if version and alias:
            raise InvalidArgument(
                f"give a version or an alias, not both (version {version}, alias {alias!r})"
            )
        if version:
            return version
        if alias:
            target = (await self._store.aliases(name)).get(check_alias(alias))
            if target is None:
                raise NotFound(f"model {name!r} has no alias {alias!r}")
            return target
        head, _ = await self._store.head(name)
        if head == 0:
            raise NotFound(f"model {name!r} has no versions")
        return head

    async def get(self, name: str, version: int = 0, alias: str = "") -> StoredVersion:
        """One verified version; NotFound when it does not exist, DataLoss when tampered."""
        number = await self.resolve(name, version, alias)
        head, _ = await self._store.head(name)
        if number > head:
            latest = f"its latest is {head}" if head else "it has no versions"
            raise NotFound(f"model {name!r} has no version {number}; {latest}")
        return (await self._many(name, [number]))[0]

    async def page(
        self, name: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[StoredVersion], str]:
        """Versions newest first, ``page_size`` at a time; the token continues the listing."""
        check_name(name)
        if page_size < 0:
            raise InvalidArgument(
                f"page_size {page_size} is negative; expected 0 (the default) or more"
            )
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        head, _ = await self._store.head(name)
        if head == 0:
            raise NotFound(f"model {name!r} has no versions")
        start = head
        if page_token:
            if not page_token.isdigit() or not 1 <= int(page_token) <= head:
                raise InvalidArgument(
                    f"page_token {page_token!r} is not one this listing issued; expected the "
                    "next_page_token of a previous page"
                )
            start = int(page_token)
        numbers = list(range(start, max(start - size, 0), -1))
        versions = await self._many(name, numbers)
        next_token = str(numbers[-1] - 1) if numbers[-1] > 1 else ""
        return versions, next_token

    async def lineage(self, name: str, version: int = 0) -> list[StoredVersion]:
        """The version and its ancestors by parent, back to the first one (parent 0)."""
        current = await self.get(name, version)
        line = [current]
        # A parent is always an earlier version (checked at publish, then signed), so this ends.
        while current.record.parent_version:
            current = await self.get(name, current.record.parent_version)
            line.append(current)
        return line

    async def models(self) -> list[ModelSummary]:
        """Every model that has at least one version."""
        summaries = []
        for name in await self._store.model_names():
            head, _ = await self._store.head(name)
            if head:
                summaries.append(ModelSummary(name, head, await self._store.aliases(name)))
        return summaries

    async def status(self) -> RegistryStatus:
        """How many models, versions and blob bytes the registry holds."""
        summaries = await self.models()
        blob_bytes = await asyncio.to_thread(self._blobs.total_bytes)
        return RegistryStatus(
            models=len(summaries),
            versions=sum(s.latest_version for s in summaries),
            blob_bytes=blob_bytes,
            signing_public_key=self._signer.public_key_raw,
            signing_key_id=self._signer.key_id,
        )

    async def _many(self, name: str, numbers: list[int]) -> list[StoredVersion]:
        """Versions that must exist (each at most the head): a missing record is tampering."""
        raws = await self._store.get_many(name, numbers)
        aliases = await self._store.aliases(name)
        async with self._check.alarming():
            versions = []
            for number, raw in zip(numbers, raws, strict=True):
                if raw is None:
                    raise Tampering(
                        name, number, f"record of version {number} of model {name!r} is missing"
                    )
                versions.append(self._check.verify(raw, name, number, aliases))
            return versions
