"""The registry as the aggregator needs it, over `RegistryClient`: describe, fetch, publish."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from fedmesh.client.registry import Provenance, RegistryClient
from fedmesh.errors import DataLoss
from fedmesh.services.aggregator.base_model import PublishedModel
from fedmesh.services.aggregator.convert import manifest_from_proto, rule_to_proto
from fedmesh.services.aggregator.round_aggregation import ModelRelease
from fedmesh.services.aggregator.update import ModelRef


class RegistryModels:
    """Implements `ModelCatalog` and `ModelRegistry` with a registry client."""

    def __init__(self, client: RegistryClient) -> None:
        self._client = client

    async def describe(self, name: str, version: int) -> PublishedModel:
        """The published version's reference and manifest."""
        found = await self._client.get_version(name, version)
        ref = ModelRef(found.ref.name, int(found.ref.version), found.ref.digest)
        return PublishedModel(ref, manifest_from_proto(found.manifest))

    async def fetch(self, ref: ModelRef, path: Path) -> None:
        """Download ``ref`` to ``path``; the client checks the bytes against the digest."""
        done = await self._client.download_to(path, ref.name, ref.version)
        if done.version.ref.digest != ref.digest:
            raise DataLoss(
                f"the registry served {ref.name} v{ref.version} with digest "
                f"{done.version.ref.digest}; the round expects {ref.digest}"
            )

    async def publish(self, release: ModelRelease, chunks: Iterator[bytes]) -> ModelRef:
        """Publish the round's model with its lineage; a retry returns the same version."""
        version = await self._client.publish(
            release.name,
            chunks,
            manifest=release.manifest,
            digest=release.digest,
            size_bytes=release.size_bytes,
            parent_version=release.parent_version,
            provenance=Provenance(
                run_id=release.run_id,
                round=release.round_no,
                rule=rule_to_proto(release.rule),
                participant_update_digests=release.participant_update_digests,
                rejected=release.rejected,
                epsilon_spent=release.epsilon_spent,
                delta=release.delta,
            ),
            fencing_token=release.fencing_token,
        )
        return ModelRef(version.ref.name, int(version.ref.version), version.ref.digest)
