"""The canonical byte layout of models and updates: safetensors with a fixed header.

This module reads and writes headers only, without torch; `payload` has the tensors.

Tensors are laid out in name order, the JSON header has sorted keys, no spaces and
no metadata, and is padded with spaces to a multiple of 8 bytes. The same tensors
therefore always give the same bytes, the SHA-256 over them is the digest, and any
safetensors reader loads them. Nothing here ever unpickles.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from fedmesh.errors import InvalidArgument
from fedmesh.tensors.manifest import Manifest, TensorSpec, dtype_from_code

MAX_HEADER_BYTES = 100 << 20


def encode_header(manifest: Manifest) -> bytes:
    """The length prefix and JSON header of the canonical layout of ``manifest``."""
    entries: dict[str, object] = {}
    offset = 0
    for spec in manifest.tensors:
        entries[spec.name] = {
            "data_offsets": [offset, offset + spec.nbytes],
            "dtype": spec.code,
            "shape": list(spec.shape),
        }
        offset += spec.nbytes
    header = json.dumps(entries, sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-(len(header) + 8) % 8)
    return struct.pack("<Q", len(header)) + header


@dataclass(frozen=True)
class ParsedHeader:
    """What the header of a canonical payload says."""

    manifest: Manifest
    data_offset: int

    @property
    def total_bytes(self) -> int:
        """Size of the whole payload: header and data."""
        return self.data_offset + self.manifest.nbytes


def header_length(prefix: bytes) -> int:
    """The byte length of the header announced by the first 8 bytes of a payload."""
    if len(prefix) < 8:
        raise InvalidArgument("payload shorter than the 8-byte safetensors length prefix")
    (length,) = struct.unpack("<Q", prefix[:8])
    if length > MAX_HEADER_BYTES:
        raise InvalidArgument(f"safetensors header of {length} bytes exceeds {MAX_HEADER_BYTES}")
    return int(length)


def parse_header(head: bytes) -> ParsedHeader:
    """Parse the header at the start of ``head`` and check that it is canonical."""
    length = header_length(head)
    if len(head) < 8 + length:
        raise InvalidArgument("payload ends inside the safetensors header")
    try:
        entries = json.loads(head[8 : 8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"safetensors header is not valid JSON: {exc}") from None
    if not isinstance(entries, dict):
        raise InvalidArgument("safetensors header is not a JSON object")
    entries.pop("__metadata__", None)
    specs = []
    for name, entry in entries.items():
        try:
            specs.append(
                TensorSpec(
                    name, dtype_from_code(entry["dtype"]), tuple(int(d) for d in entry["shape"])
                )
            )
        except (KeyError, TypeError, ValueError):
            raise InvalidArgument(f"safetensors header entry {name!r} is malformed") from None
    manifest = Manifest.of(specs)
    if encode_header(manifest) != head[: 8 + length]:
        raise InvalidArgument("safetensors header is not in fedmesh's canonical layout")
    return ParsedHeader(manifest, 8 + length)
