"""Flat float32 vectors of whole models, in canonical (name) order."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fedmesh.errors import InvalidArgument
from fedmesh.tensors.manifest import Manifest
from fedmesh.tensors.torch_dtypes import torch_dtype


def flatten(tensors: Mapping[str, torch.Tensor], manifest: Manifest) -> torch.Tensor:
    """Concatenate the tensors named by ``manifest`` into one float32 vector."""
    parts = []
    for spec in manifest.tensors:
        tensor = tensors.get(spec.name)
        if tensor is None:
            raise InvalidArgument(f"tensor {spec.name!r} is missing")
        if tuple(tensor.shape) != spec.shape:
            raise InvalidArgument(
                f"tensor {spec.name!r} has shape {tuple(tensor.shape)}; expected {spec.shape}"
            )
        parts.append(tensor.detach().reshape(-1).to(torch.float32))
    if not parts:
        return torch.zeros(0, dtype=torch.float32)
    return torch.cat(parts)


def unflatten(vector: torch.Tensor, manifest: Manifest) -> dict[str, torch.Tensor]:
    """Split a flat vector back into named tensors of the manifest's dtypes and shapes."""
    if vector.numel() != manifest.numel:
        raise InvalidArgument(
            f"vector has {vector.numel()} elements; the manifest needs {manifest.numel}"
        )
    out: dict[str, torch.Tensor] = {}
    start = 0
    for spec in manifest.tensors:
        part = vector[start : start + spec.numel]
        out[spec.name] = part.reshape(spec.shape).to(torch_dtype(spec)).clone()
        start += spec.numel
    return out
