"""The manifests of base models, fetched once per (name, version) from the registry."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from fedmesh.errors import FailedPrecondition
from fedmesh.services.aggregator.update import ModelRef
from fedmesh.tensors import Manifest


@dataclass(frozen=True)
class PublishedModel:
    """What the registry says about a model version: its reference and manifest."""

    ref: ModelRef
    manifest: Manifest


class ModelCatalog(Protocol):
    """Where base models are looked up (the registry)."""

    async def describe(self, name: str, version: int) -> PublishedModel:
        """The published version ``version`` of ``name``; NotFound when there is none."""
        ...


class BaseManifests:
    """Caches the manifest of each base model version; concurrent first lookups share one fetch.

    A version's manifest never changes once published, so the cache needs no
    expiry. A failed lookup is not cached.
    """

    def __init__(self, catalog: ModelCatalog) -> None:
        self._catalog = catalog
        self._cache: dict[tuple[str, int], asyncio.Future[Manifest]] = {}

    async def manifest(self, ref: ModelRef) -> Manifest:
        """The manifest of ``ref``: every delta for a round on ``ref`` must have exactly it."""
        key = (ref.name, ref.version)
        pending = self._cache.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._load(ref))
            self._cache[key] = pending
        try:
            return await asyncio.shield(pending)
        except Exception:
            if self._cache.get(key) is pending:
                del self._cache[key]
            raise

    async def _load(self, ref: ModelRef) -> Manifest:
        published = await self._catalog.describe(ref.name, ref.version)
        if published.ref.digest != ref.digest:
            raise FailedPrecondition(f"the registry holds {published.ref}; the round expects {ref}")
        for spec in published.manifest.tensors:
            if spec.dtype != "float32":
                raise FailedPrecondition(
                    f"base model {ref} has tensor {spec.name!r} of dtype {spec.dtype}; "
                    "the aggregator averages float32 models only"
                )
        return published.manifest
