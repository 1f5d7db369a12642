"""Canonical payloads of torch tensors: stream, encode, decode, digest (never unpickled)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from safetensors.torch import load as _load_safetensors

from fedmesh.errors import InvalidArgument
from fedmesh.tensors.canonical import encode_header, header_length, parse_header
from fedmesh.tensors.digest import digest_chunks
from fedmesh.tensors.torch_dtypes import manifest_of

DEFAULT_CHUNK_BYTES = 1 << 20


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


def digest_tensors(tensors: Mapping[str, torch.Tensor]) -> str:
    """Hex SHA-256 over the canonical payload of ``tensors``."""
    return digest_chunks(iter_payload(tensors))
