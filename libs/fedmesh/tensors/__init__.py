"""Model and update payloads: canonical safetensors layout, manifests, digests.

Headers, manifests and digests need no torch; the tensor functions load torch on
first use, so services that only move bytes (registry, coordinator) start small.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fedmesh.tensors.canonical import ParsedHeader, encode_header, header_length, parse_header
from fedmesh.tensors.digest import digest_chunks
from fedmesh.tensors.manifest import DTYPES, Manifest, TensorSpec

if TYPE_CHECKING:
    from fedmesh.tensors.flat import flatten, unflatten
    from fedmesh.tensors.payload import (
        DEFAULT_CHUNK_BYTES,
        decode,
        digest_tensors,
        encode,
        iter_payload,
    )
    from fedmesh.tensors.torch_dtypes import dtype_name, manifest_of

_LAZY = {
    "DEFAULT_CHUNK_BYTES": "payload",
    "decode": "payload",
    "digest_tensors": "payload",
    "encode": "payload",
    "iter_payload": "payload",
    "flatten": "flat",
    "unflatten": "flat",
    "dtype_name": "torch_dtypes",
    "manifest_of": "torch_dtypes",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"fedmesh.tensors.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'fedmesh.tensors' has no attribute {name!r}")


__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DTYPES",
    "Manifest",
    "ParsedHeader",
    "TensorSpec",
    "decode",
    "digest_chunks",
    "digest_tensors",
    "dtype_name",
    "encode",
    "encode_header",
    "flatten",
    "header_length",
    "iter_payload",
    "manifest_of",
    "parse_header",
    "unflatten",
]
