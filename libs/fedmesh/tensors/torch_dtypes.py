"""Manifests of torch tensors: the torch side of `fedmesh.tensors.manifest`."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fedmesh.errors import InvalidArgument
from fedmesh.tensors.manifest import Manifest, TensorSpec

TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
_NAMES = {dtype: name for name, dtype in TORCH_DTYPES.items()}


def dtype_name(dtype: torch.dtype) -> str:
    """The manifest name of a torch dtype."""
    try:
        return _NAMES[dtype]
    except KeyError:
        raise InvalidArgument(f"unsupported dtype {dtype}") from None


def torch_dtype(spec: TensorSpec) -> torch.dtype:
    """The torch dtype of a manifest entry."""
    return TORCH_DTYPES[spec.dtype]


def manifest_of(tensors: Mapping[str, torch.Tensor]) -> Manifest:
    """The manifest of a state dict."""
    return Manifest.of(
        TensorSpec(name, dtype_name(t.dtype), tuple(t.shape)) for name, t in tensors.items()
    )
