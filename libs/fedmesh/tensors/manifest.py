"""Tensor manifests: name, dtype and shape of every tensor of a payload."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from fedmesh.errors import InvalidArgument

# Manifest dtype names → safetensors dtype code and item size. No torch here, so
# the services that only read headers (registry, coordinator) never import it.
DTYPES: dict[str, tuple[str, int]] = {
    "float32": ("F32", 4),
    "float64": ("F64", 8),
    "float16": ("F16", 2),
    "bfloat16": ("BF16", 2),
    "int64": ("I64", 8),
    "int32": ("I32", 4),
    "int16": ("I16", 2),
    "int8": ("I8", 1),
    "uint8": ("U8", 1),
    "bool": ("BOOL", 1),
}
_BY_CODE = {code: name for name, (code, _) in DTYPES.items()}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor: its name, dtype name (``"float32"``…) and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the raw data."""
        return self.numel * DTYPES[self.dtype][1]

    @property
    def code(self) -> str:
        """The safetensors dtype code (``F32``…)."""
        return DTYPES[self.dtype][0]


@dataclass(frozen=True)
class Manifest:
    """The tensors of a payload in canonical order (sorted by name)."""

    tensors: tuple[TensorSpec, ...]

    @classmethod
    def of(cls, specs: Iterable[TensorSpec]) -> Manifest:
        """Build a manifest, validating dtypes, shapes and unique names."""
        ordered = tuple(sorted(specs, key=lambda s: s.name))
        names = [s.name for s in ordered]
        if len(set(names)) != len(names):
            raise InvalidArgument("manifest has duplicate tensor names")
        for spec in ordered:
            if not spec.name:
                raise InvalidArgument("manifest has a tensor with an empty name")
            if spec.dtype not in DTYPES:
                raise InvalidArgument(
                    f"tensor {spec.name!r} has dtype {spec.dtype!r}; expected one of "
                    f"{', '.join(sorted(DTYPES))}"
                )
            if any(d < 0 for d in spec.shape):
                raise InvalidArgument(f"tensor {spec.name!r} has a negative dimension")
        return cls(ordered)

    @property
    def nbytes(self) -> int:
        """Bytes of all raw tensor data."""
        return sum(s.nbytes for s in self.tensors)

    @property
    def numel(self) -> int:
        """Elements in all tensors."""
        return sum(s.numel for s in self.tensors)

    def is_uniform(self, dtype: str) -> bool:
        """True when every tensor has ``dtype`` (a flat vector view is then possible)."""
        return all(s.dtype == dtype for s in self.tensors)


def dtype_from_code(code: str) -> str:
    """The manifest name of a safetensors dtype code."""
    try:
        return _BY_CODE[code]
    except KeyError:
        raise InvalidArgument(f"unsupported safetensors dtype {code!r}") from None
