"""Checks on an update: its header before any byte is accepted, then its payload chunk by chunk.

The payload of a delta is the canonical safetensors layout of float32 tensors
with the base model's manifest, so its header bytes are known in advance and
its data is one float32 vector. Nothing here holds more than one chunk.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import re
from collections.abc import Mapping

import numpy as np

from fedmesh.client.signing import (
    MAX_NONCE_BYTES,
    NONCE_BYTES,
    SIGNATURE_BYTES,
    SIGNING_KEYS_FIELD,
    verify_update,
)
from fedmesh.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Unauthenticated
from fedmesh.services.aggregator.update import Chunk, UpdateHeader
from fedmesh.tensors import Manifest, TensorSpec, encode_header, header_length, parse_header

IDENTIFIER_MAX_BYTES = 180
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_FLOAT32 = np.dtype("<f4")


class InvalidUpdate(InvalidArgument):
    """An update that is malformed whatever the round's state; ``reason`` labels the metric."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class UnverifiedUpdate(Unauthenticated):
    """An update not proven to come, fresh, from its node; ``reason`` labels the metric."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def payload_size(manifest: Manifest) -> int:
    """Bytes of the canonical payload of a manifest: length prefix, header, data."""
    return len(encode_header(manifest)) + manifest.nbytes


def check_header(header: UpdateHeader, max_update_bytes: int) -> None:
    """Refuse a header with a missing or malformed field, or one announcing too many bytes."""
    for field, value in (("run_id", header.run_id), ("node_id", header.node_id)):
        if not value:
            raise InvalidUpdate("malformed_header", f"header.{field} is empty; expected an id")
        if len(value.encode()) > IDENTIFIER_MAX_BYTES:
            raise InvalidUpdate(
                "malformed_header",
                f"header.{field} has {len(value.encode())} bytes; expected at most "
                f"{IDENTIFIER_MAX_BYTES}",
            )
    if header.round_no < 0:
        raise InvalidUpdate("malformed_header", f"header.round is {header.round_no}; expected ≥ 0")
    if not _DIGEST.match(header.digest):
        raise InvalidUpdate(
            "malformed_header",
            f"header.digest {header.digest!r} is not a SHA-256 digest; expected 64 lowercase "
            "hex characters",
        )
    if header.num_samples < 1:
        raise InvalidUpdate(
            "malformed_header", f"header.num_samples is {header.num_samples}; expected ≥ 1"
        )
    if not math.isfinite(header.local_loss):
        raise InvalidUpdate(
            "malformed_header",
            f"header.local_loss is {header.local_loss}; expected a finite number",
        )
    if not header.base_model.name or header.base_model.version < 1:
        raise InvalidUpdate(
            "malformed_header",
            f"header.base_model is {header.base_model}; expected a model name and version ≥ 1",
        )
    if header.payload_bytes < 1:
        raise InvalidUpdate(
            "malformed_header", f"header.payload_bytes is {header.payload_bytes}; expected ≥ 1"
        )
    if header.payload_bytes > max_update_bytes:
        raise ResourceExhausted(
            f"update of {header.payload_bytes} bytes exceeds the aggregator's limit of "
            f"{max_update_bytes} bytes (FEDMESH_AGGREGATOR_MAX_UPDATE_BYTES)"
        )
    if not header.signature:
        raise UnverifiedUpdate(
            "unsigned",
            f"header.signature is empty; node {header.node_id!r} must sign its update with the "
            "Ed25519 key it registered with the coordinator",
        )
    if len(header.signature) != SIGNATURE_BYTES:
        raise InvalidUpdate(
            "malformed_header",
            f"header.signature has {len(header.signature)} bytes; expected a "
            f"{SIGNATURE_BYTES}-byte Ed25519 signature",
        )
    if not NONCE_BYTES <= len(header.nonce) <= MAX_NONCE_BYTES:
        raise InvalidUpdate(
            "malformed_header",
            f"header.nonce has {len(header.nonce)} bytes; expected {NONCE_BYTES}–"
            f"{MAX_NONCE_BYTES} random bytes, fresh for every update",
        )


def check_signature(header: UpdateHeader, round_fields: Mapping[str, str]) -> None:
    """Refuse an update whose signature is not by the key its node registered.

    The key comes from the round record, where the coordinator wrote it when it
    opened the round; a round without keys cannot accept updates.
    """
    where = f"round {header.round_no} of run {header.run_id}"
    try:
        keys = json.loads(round_fields[SIGNING_KEYS_FIELD])
        public_key = bytes.fromhex(keys[header.node_id])
    except KeyError:
        raise FailedPrecondition(
            f"{where} has no signing key recorded for node {header.node_id!r} (round field "
            f"{SIGNING_KEYS_FIELD}); the coordinator writes the participants' keys when it opens "
            "a round, so its updates cannot be verified"
        ) from None
    except (TypeError, ValueError):
        raise FailedPrecondition(
            f"{where} has a malformed {SIGNING_KEYS_FIELD} field; expected JSON node id → hex key"
        ) from None
    if not verify_update(
        public_key,
        header.signature,
        header.run_id,
        header.round_no,
        header.node_id,
        header.nonce,
        header.digest,
    ):
        raise UnverifiedUpdate(
            "bad_signature",
            f"header.signature does not verify with the Ed25519 key node {header.node_id!r} "
            f"registered (over run, round, node, nonce and digest {header.digest}); refusing "
            "the update",
        )


def _describe(spec: TensorSpec) -> str:
    return f"{spec.dtype} {list(spec.shape)}"


def check_manifest(expected: Manifest, got: Manifest, what: str) -> None:
    """Refuse a manifest that differs from the base model's, naming the first tensor that does."""
    wanted = {spec.name: spec for spec in expected.tensors}
    sent = {spec.name: spec for spec in got.tensors}
    for name in sorted(wanted.keys() | sent.keys()):
        if name not in sent:
            raise InvalidUpdate(
                "manifest_mismatch",
                f"tensor {name!r} is missing from the {what}; expected {_describe(wanted[name])}",
            )
        if name not in wanted:
            raise InvalidUpdate(
                "manifest_mismatch",
                f"tensor {name!r} of the {what} is not in the base model; expected only "
                f"{', '.join(sorted(wanted))}",
            )
        if wanted[name] != sent[name]:
            raise InvalidUpdate(
                "manifest_mismatch",
                f"tensor {name!r} of the {what} is {_describe(sent[name])}; expected "
                f"{_describe(wanted[name])}",
            )


class PayloadChecker:
    """Hashes a streamed float32 payload and checks its header and values as chunks arrive.

    `feed` raises as soon as a chunk proves the payload wrong (header different
    from the manifest, NaN or Inf, more bytes than announced); `finish` checks
    the byte count and the digest once the stream ends.
    """

    def __init__(self, manifest: Manifest, digest: str, payload_bytes: int) -> None:
        self._manifest = manifest
        self._digest = digest
        self._payload_bytes = payload_bytes
        self._header = encode_header(manifest)
        self._foreign: bytearray | None = None
        self._hasher = hashlib.sha256()
        self._received = 0
        self._carry = b""
        ends, total = [], 0
        for spec in manifest.tensors:
            total += spec.numel
            ends.append(total)
        self._tensor_ends = ends

    @property
    def received(self) -> int:
        """Bytes fed so far."""
        return self._received

    def feed(self, chunk: Chunk) -> None:
        """Take the next chunk of the payload."""
        if self._received + len(chunk) > self._payload_bytes:
            raise InvalidUpdate(
                "size_mismatch",
                f"payload goes past the {self._payload_bytes} bytes announced in the header",
            )
        self._hasher.update(chunk)
        start = self._received
        self._received += len(chunk)
        if self._foreign is not None:
            self._foreign += chunk
            self._reject_foreign_header(complete=False)
            return
        view = memoryview(chunk)
        header_left = len(self._header) - start
        if header_left > 0:
            if view[:header_left] != self._header[start : start + len(view[:header_left])]:
                # Keep the sender's header until it is whole, to say what differs.
                self._foreign = bytearray(self._header[:start]) + chunk
                self._reject_foreign_header(complete=False)
                return
            view = view[header_left:]
            start = len(self._header)
        if view:
            self._check_values(view, start - len(self._header))

    def finish(self) -> str:
        """Check the byte count and the digest at the end of the stream; return the digest."""
        if self._foreign is not None:
            self._reject_foreign_header(complete=True)
        if self._received != self._payload_bytes:
            raise InvalidUpdate(
                "size_mismatch",
                f"payload has {self._received} bytes; the header announced {self._payload_bytes}",
            )
        actual = self._hasher.hexdigest()
        if actual != self._digest:
            raise InvalidUpdate(
                "digest_mismatch",
                f"payload hashes to SHA-256 {actual}; the header announced {self._digest}",
            )
        return actual

    def _reject_foreign_header(self, complete: bool) -> None:
        head = bytes(self._foreign or b"")
        try:
            whole = len(head) >= 8 and len(head) >= 8 + header_length(head)
            if not (whole or complete):
                return
            parsed = parse_header(head)
        except InvalidArgument as exc:
            raise InvalidUpdate(
                "manifest_mismatch",
                "payload does not start with the canonical safetensors header of the "
                f"manifest ({exc})",
            ) from None
        check_manifest(self._manifest, parsed.manifest, "payload header")
        raise InvalidUpdate(
            "manifest_mismatch",
            "payload header is not the canonical safetensors header of the manifest",
        )

    def _check_values(self, data: memoryview, position: int) -> None:
        if self._carry:
            need = _FLOAT32.itemsize - len(self._carry)
            head, data = bytes(self._carry) + bytes(data[:need]), data[need:]
            if len(head) < _FLOAT32.itemsize:
                self._carry = head
                return
            self._require_finite(np.frombuffer(head, dtype=_FLOAT32), position - len(self._carry))
            position += need
            self._carry = b""
        whole = len(data) - len(data) % _FLOAT32.itemsize
        if whole:
            self._require_finite(np.frombuffer(data[:whole], dtype=_FLOAT32), position)
        self._carry = bytes(data[whole:])

    def _require_finite(self, values: np.ndarray, byte_position: int) -> None:
        if bool(np.isfinite(values).all()):
            return
        first = int(np.flatnonzero(~np.isfinite(values))[0])
        element = byte_position // _FLOAT32.itemsize + first
        tensor = bisect.bisect_right(self._tensor_ends, element)
        spec = self._manifest.tensors[tensor]
        within = element - (self._tensor_ends[tensor] - spec.numel)
        value = float(values[first])
        kind = "NaN" if math.isnan(value) else f"{value}"
        raise InvalidUpdate(
            "non_finite",
            f"tensor {spec.name!r} holds {kind} at element {within}; every value must be finite",
        )
