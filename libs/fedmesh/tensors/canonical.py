"""The canonical byte layout of models and updates: safetensors with a fixed header.

Tensors are laid out in name order, the JSON header has sorted keys, no spaces and
no metadata, and is padded with spaces to a multiple of 8 bytes. The same tensors
therefore always give the same bytes, the SHA-256 over them is the digest, and any
safetensors reader loads them. Nothing here ever unpickles.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load as _load_safetensors

from fedmesh.errors import InvalidArgument
from fedmesh.tensors.manifest import Manifest, TensorSpec, dtype_from_code, manifest_of

DEFAULT_CHUNK_BYTES = 1 << 20
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


def _raw_bytes(tensor: torch.Tensor) -> memoryview:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    array: Any = flat.view(torch.uint8).numpy()
    return memoryview(array).cast("B")


def iter_payload(
    tensors: Mapping[str, torch.Tensor], chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[bytes]:
    """Yield the canonical payload of ``tensors`` in chunks, never all of it at once."""
    manifest = manifest_of(tensors)
    buffer = bytearray(encode_header(manifest))
    for spec in manifest.tensors:
        raw = _raw_bytes(tensors[spec.name])
        start = 0
        while start < len(raw):
            take = min(chunk_bytes - len(buffer), len(raw) - start)
            buffer += raw[start : start + take]
            start += take
            if len(buffer) >= chunk_bytes:
                yield bytes(buffer)
                buffer.clear()
    if buffer:
        yield bytes(buffer)


def encode(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """The whole canonical payload of ``tensors`` (for small models)."""
    return b"".join(iter_payload(tensors))


def decode(payload: bytes) -> dict[str, torch.Tensor]:
    """Load a canonical payload into tensors, checking the layout first."""
    parsed = parse_header(payload[: 8 + header_length(payload)])
    if len(payload) != parsed.total_bytes:
        raise InvalidArgument(
            f"payload has {len(payload)} bytes; its header announces {parsed.total_bytes}"
        )
    return dict(_load_safetensors(payload))
