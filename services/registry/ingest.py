"""Checks a canonical model payload as it streams in, chunk by chunk, never holding it whole.

The payload must be exactly the canonical safetensors layout of the manifest the
publisher announced: the same header bytes, then that many data bytes, and every
floating-point value finite.
"""

from __future__ import annotations

import numpy as np

from fedmesh.errors import InvalidArgument
from fedmesh.tensors import Manifest, TensorSpec, encode_header, header_length, parse_header

# Unsigned view and exponent mask per float dtype: all exponent bits set is NaN or Inf.
_NON_FINITE: dict[str, tuple[np.dtype[np.unsignedinteger], int]] = {
    "float64": (np.dtype("<u8"), 0x7FF0000000000000),
    "float32": (np.dtype("<u4"), 0x7F800000),
    "float16": (np.dtype("<u2"), 0x7C00),
    "bfloat16": (np.dtype("<u2"), 0x7F80),
}


def payload_size(manifest: Manifest) -> int:
    """Bytes of the canonical payload of ``manifest``: header and data."""
    return len(encode_header(manifest)) + manifest.nbytes


def _describe(spec: TensorSpec) -> str:
    return f"{spec.dtype}{list(spec.shape)}"


def _difference(payload: Manifest, announced: Manifest) -> str:
    have = {s.name: s for s in payload.tensors}
    want = {s.name: s for s in announced.tensors}
    if have.keys() != want.keys():
        return (
            "the payload's tensors differ from the manifest in the request header: "
            f"only in the payload {sorted(have.keys() - want.keys())}, "
            f"only in the manifest {sorted(want.keys() - have.keys())}"
        )
    name = next(n for n in sorted(have) if have[n] != want[n])
    return (
        f"the payload has tensor {name!r} as {_describe(have[name])}; "
        f"the manifest in the request header says {_describe(want[name])}"
    )


class PayloadCheck:
    """Validates a payload fed in chunks against the announced manifest and size."""

    def __init__(self, manifest: Manifest, size_bytes: int) -> None:
        self._manifest = manifest
        self._header = encode_header(manifest)
        self._size = size_bytes
        self._received = 0
        self._head = bytearray()
        self._tensor = 0
        self._in_tensor = 0
        self._carry = b""

    @property
    def received(self) -> int:
        """Bytes fed so far."""
        return self._received

    def feed(self, chunk: bytes) -> None:
        """Check the next chunk; InvalidArgument at the first thing that is wrong."""
        if self._received + len(chunk) > self._size:
            raise InvalidArgument(
                f"payload is longer than the {self._size} bytes announced in the request header"
            )
        self._received += len(chunk)
        view = memoryview(chunk)
        missing = len(self._header) - len(self._head)
        if missing > 0:
            self._head += view[:missing]
            view = view[missing:]
            self._check_head()
        if view:
            self._scan(view)

    def finish(self) -> None:
        """The stream ended: InvalidArgument unless every announced byte arrived."""
        if self._received != self._size:
            raise InvalidArgument(
                f"payload ended after {self._received} bytes; the request header announced "
                f"{self._size}"
            )

    def _check_head(self) -> None:
        head = bytes(self._head)
        if len(head) >= 8 and header_length(head) != len(self._header) - 8:
            raise InvalidArgument(
                f"the payload's safetensors header is {header_length(head)} bytes; the manifest "
                f"in the request header makes a {len(self._header) - 8}-byte header, so they "
                "describe different tensors"
            )
        if len(head) == len(self._header) and head != self._header:
            raise InvalidArgument(_difference(parse_header(head).manifest, self._manifest))

    def _scan(self, view: memoryview) -> None:
        while view:
            spec = self._manifest.tensors[self._tensor]
            take = min(spec.nbytes - self._in_tensor, len(view))
            if take and spec.dtype in _NON_FINITE:
                self._check_finite(spec, view[:take])
            self._in_tensor += take
            view = view[take:]
            if self._in_tensor == spec.nbytes:
                self._tensor += 1
                self._in_tensor = 0

    def _check_finite(self, spec: TensorSpec, part: memoryview) -> None:
        dtype, mask = _NON_FINITE[spec.dtype]
        data = self._carry + bytes(part) if self._carry else part
        whole = len(data) // dtype.itemsize * dtype.itemsize
        bits = np.frombuffer(data[:whole], dtype=dtype)
        bad = (bits & mask) == mask
        if bad.any():
            first = (self._in_tensor - len(self._carry)) // dtype.itemsize
            raise InvalidArgument(
                f"tensor {spec.name!r} holds NaN or Inf at element "
                f"{first + int(np.argmax(bad))}; a model's values must be finite"
            )
        self._carry = bytes(data[whole:])
