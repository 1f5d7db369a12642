"""Version records: the immutable, canonical, signed part and what is attached later.

The canonical form of a record is JSON with sorted keys, no spaces, ASCII only and no
NaN; its SHA-256 is the record digest, the next version stores it as
``previous_digest`` (the hash chain), and the registry's Ed25519 key signs exactly
these bytes. Evaluation metrics, aliases and the blob-dropped mark are attached
afterwards and are not part of the chain.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from fedmesh.errors import DataLoss, InvalidArgument
from fedmesh.tensors import Manifest, TensorSpec

RECORD_FORMAT = "fedmesh.registry.record.v1"


@dataclass(frozen=True)
class Rejection:
    """A node whose update the aggregation rule excluded, and why."""

    node_id: str
    reason: str


@dataclass(frozen=True)
class Provenance:
    """What produced a version: run, round, rule, the updates used and refused, privacy."""

    run_id: str = ""
    round: int = 0
    rule: str = "AGGREGATION_RULE_UNSPECIFIED"
    participant_update_digests: tuple[str, ...] = ()
    rejected: tuple[Rejection, ...] = ()
    epsilon_spent: float = 0.0
    delta: float = 0.0


@dataclass(frozen=True)
class VersionRecord:
    """The signed facts of one version; never changes once written."""

    name: str
    version: int
    digest: str
    size_bytes: int
    manifest: Manifest
    parent_version: int
    previous_digest: str
    provenance: Provenance
    created_unix_ms: int
    signer_key_id: str

    def canonical(self) -> bytes:
        """The canonical bytes that are hashed and signed."""
        p = self.provenance
        body: dict[str, Any] = {
            "format": RECORD_FORMAT,
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "size_bytes": self.size_bytes,
            "manifest": [
                {"name": s.name, "dtype": s.dtype, "shape": list(s.shape)}
                for s in self.manifest.tensors
            ],
            "parent_version": self.parent_version,
            "previous_digest": self.previous_digest,
            "run_id": p.run_id,
            "round": p.round,
            "rule": p.rule,
            "participant_update_digests": list(p.participant_update_digests),
            "rejected": [{"node_id": r.node_id, "reason": r.reason} for r in p.rejected],
            "epsilon_spent": p.epsilon_spent,
            "delta": p.delta,
            "created_unix_ms": self.created_unix_ms,
            "signer_key_id": self.signer_key_id,
        }
        return json.dumps(
            body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        ).encode()

    @classmethod
    def from_canonical(cls, raw: bytes) -> VersionRecord:
        """Parse canonical bytes; ValueError unless they parse and re-encode identically."""
        body = json.loads(raw)
        if body.get("format") != RECORD_FORMAT:
            raise ValueError(f"record format is {body.get('format')!r}, not {RECORD_FORMAT}")
        record = cls(
            name=str(body["name"]),
            version=int(body["version"]),
            digest=str(body["digest"]),
            size_bytes=int(body["size_bytes"]),
            manifest=Manifest.of(
                TensorSpec(str(t["name"]), str(t["dtype"]), tuple(int(d) for d in t["shape"]))
                for t in body["manifest"]
            ),
            parent_version=int(body["parent_version"]),
            previous_digest=str(body["previous_digest"]),
            provenance=Provenance(
                run_id=str(body["run_id"]),
                round=int(body["round"]),
                rule=str(body["rule"]),
                participant_update_digests=tuple(
                    str(d) for d in body["participant_update_digests"]
                ),
                rejected=tuple(
                    Rejection(str(r["node_id"]), str(r["reason"])) for r in body["rejected"]
                ),
                epsilon_spent=float(body["epsilon_spent"]),
                delta=float(body["delta"]),
            ),
            created_unix_ms=int(body["created_unix_ms"]),
            signer_key_id=str(body["signer_key_id"]),
        )
        if record.canonical() != raw:
            raise ValueError("record bytes are not in canonical form")
        return record


def record_digest(canonical: bytes) -> str:
    """Hex SHA-256 of a record's canonical bytes."""
    return hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True)
class SignedRecord:
    """A record as stored: its canonical bytes, their digest and the registry's signature."""

    canonical: bytes
    record_digest: str
    signature: bytes

    def to_json(self) -> str:
        """The stored JSON form."""
        return json.dumps(
            {
                "record": self.canonical.decode("ascii"),
                "record_digest": self.record_digest,
                "signature": self.signature.hex(),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, raw: str, name: str, version: int) -> SignedRecord:
        """Parse the stored form; DataLoss when it is not even well-formed."""
        try:
            body = json.loads(raw)
            return cls(
                canonical=str(body["record"]).encode("ascii"),
                record_digest=str(body["record_digest"]),
                signature=bytes.fromhex(str(body["signature"])),
            )
        except (ValueError, KeyError, TypeError, UnicodeEncodeError):
            raise DataLoss(
                f"stored record of version {version} of model {name!r} is malformed"
            ) from None


@dataclass(frozen=True)
class Evaluation:
    """Evaluation metrics of a version, weighted over the reporting nodes."""

    loss: float
    macro_f1: float
    pr_auc: float
    samples: int
    reporters: int

    def check(self) -> Evaluation:
        """Refuse non-finite or out-of-range metrics."""
        metrics = (("loss", self.loss), ("macro_f1", self.macro_f1), ("pr_auc", self.pr_auc))
        for label, value in metrics:
            if not math.isfinite(value):
                raise InvalidArgument(f"evaluation {label} is {value}; expected a finite number")
        if self.loss < 0:
            raise InvalidArgument(f"evaluation loss is {self.loss}; expected >= 0")
        for label, value in (("macro_f1", self.macro_f1), ("pr_auc", self.pr_auc)):
            if not 0.0 <= value <= 1.0:
                raise InvalidArgument(f"evaluation {label} is {value}; expected within [0, 1]")
        if self.samples < 1:
            raise InvalidArgument(f"evaluation samples is {self.samples}; expected >= 1")
        if self.reporters < 1:
            raise InvalidArgument(f"evaluation reporters is {self.reporters}; expected >= 1")
        return self

    def to_json(self) -> str:
        """The stored JSON form."""
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> Evaluation:
        """Parse the stored JSON form."""
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class StoredVersion:
    """A verified record with what is attached to it now."""

    record: VersionRecord
    record_digest: str
    signature: bytes
    evaluation: Evaluation | None
    blob_dropped: bool
    aliases: tuple[str, ...]
