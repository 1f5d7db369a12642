"""SubmitUpdate's messages off the wire, with a zero-copy path for chunk messages.

A ``SubmitUpdateRequest`` holding only ``chunk`` is encoded as the tag 0x12
(field 2, length-delimited), a varint length, and the bytes. Parsing that shape
here yields a view of the bytes without the two copies a protobuf parse and the
``chunk`` accessor make, which is most of the cost of a large upload. Any other
encoding (the header, unknown fields, a repeated field) goes to protobuf.
"""

from __future__ import annotations

from fedmesh.proto.aggregator.v1 import aggregator_pb2 as pb

_CHUNK_TAG = 0x12
_MAX_VARINT_BYTES = 10

SubmitItem = pb.SubmitUpdateRequest | memoryview
"""A parsed SubmitUpdate message: a chunk's bytes, or any other message as protobuf."""


def _read_varint(data: bytes, position: int) -> tuple[int, int] | None:
    value = 0
    for index in range(_MAX_VARINT_BYTES):
        if position + index >= len(data):
            return None
        byte = data[position + index]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value, position + index + 1
    return None


def parse_submit_request(data: bytes) -> SubmitItem:
    """A chunk-only message as a view of its bytes; anything else parsed by protobuf."""
    if data[:1] == bytes([_CHUNK_TAG]):
        read = _read_varint(data, 1)
        if read is not None and read[0] + read[1] == len(data):
            return memoryview(data)[read[1] :]
    return pb.SubmitUpdateRequest.FromString(data)
