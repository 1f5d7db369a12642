"""What a node announces about its update, and the model version it trained on."""

from __future__ import annotations

import json
from dataclasses import dataclass

from fedmesh.errors import FailedPrecondition
from fedmesh.tensors import Manifest

Chunk = bytes | memoryview
"""A piece of a payload as it arrives: bytes, or a view into a received message."""


@dataclass(frozen=True)
class ModelRef:
    """A model version: name, version number and digest of its canonical payload."""

    name: str
    version: int
    digest: str

    def __str__(self) -> str:
        return f"{self.name} v{self.version} (digest {self.digest})"

    @classmethod
    def from_round_field(cls, raw: str | None, run_id: str, round_no: int) -> ModelRef:
        """Parse the round's ``base_model`` field (JSON written by the coordinator)."""
        try:
            data = json.loads(raw or "null")
            return cls(str(data["name"]), int(data["version"]), str(data["digest"]))
        except (TypeError, KeyError, ValueError):
            raise FailedPrecondition(
                f"round {round_no} of run {run_id} has no valid base model recorded "
                f"(field base_model={raw!r}); expected JSON with name, version and digest"
            ) from None


@dataclass(frozen=True)
class UpdateHeader:
    """The first message of an upload: whose update, for which round, and its shape."""

    run_id: str
    round_no: int
    node_id: str
    manifest: Manifest
    digest: str
    num_samples: int
    payload_bytes: int
    base_model: ModelRef
    local_loss: float
    nonce: bytes
    signature: bytes
