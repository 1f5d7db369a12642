"""The aggregator's chunk fast path gives exactly what protobuf parsing gives."""

import pytest

from fedmesh.proto.aggregator.v1 import aggregator_pb2 as pb
from fedmesh.services.aggregator.wire import parse_submit_request


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, (1 << 20) + 3])
def test_a_chunk_message_parses_as_a_view_of_its_bytes(size: int) -> None:
    chunk = bytes(range(256)) * (size // 256) + bytes(size % 256)

    parsed = parse_submit_request(pb.SubmitUpdateRequest(chunk=chunk).SerializeToString())

    assert isinstance(parsed, memoryview)
    assert parsed.tobytes() == chunk


def test_a_header_message_is_parsed_by_protobuf() -> None:
    message = pb.SubmitUpdateRequest(header=pb.UpdateHeader(run_id="r", round=2, node_id="n"))

    parsed = parse_submit_request(message.SerializeToString())

    assert parsed == message


@pytest.mark.parametrize(
    "wire",
    [
        # a chunk followed by another field: not the chunk-only shape
        pb.SubmitUpdateRequest(chunk=b"abc").SerializeToString() + b"\x12\x01z",
        # a length that runs past the end, or a truncated varint: protobuf decides
        b"\x12\x05ab",
        b"\x12\x80",
    ],
)
def test_any_other_shape_gets_protobuf_semantics(wire: bytes) -> None:
    try:
        expected: object = pb.SubmitUpdateRequest.FromString(wire)
    except Exception as exc:
        expected = type(exc)

    try:
        parsed: object = parse_submit_request(wire)
    except Exception as exc:
        parsed = type(exc)

    assert parsed == expected
