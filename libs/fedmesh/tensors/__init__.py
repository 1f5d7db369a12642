"""Model and update payloads: canonical safetensors layout, manifests, digests."""

from fedmesh.tensors.canonical import (
    DEFAULT_CHUNK_BYTES,
    ParsedHeader,
    decode,
    encode,
    encode_header,
    header_length,
    iter_payload,
    parse_header,
)
from fedmesh.tensors.digest import digest_chunks, digest_tensors
from fedmesh.tensors.flat import flatten, unflatten
from fedmesh.tensors.manifest import DTYPES, Manifest, TensorSpec, dtype_name, manifest_of

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
