"""PayloadCheck: the streamed payload must be the announced manifest's canonical bytes."""

from __future__ import annotations

import math

import pytest
import torch

from fedmesh.errors import InvalidArgument
from fedmesh.services.registry.ingest import PayloadCheck, payload_size
from fedmesh.tensors import encode, manifest_of

TENSORS = {
    "a.weight": torch.arange(30, dtype=torch.float32).reshape(5, 6),
    "b.half": torch.arange(7, dtype=torch.float16),
    "c.bf16": torch.arange(9, dtype=torch.bfloat16),
    "d.double": torch.arange(3, dtype=torch.float64),
    "e.steps": torch.arange(4, dtype=torch.int64),
}


def fed(tensors: dict[str, torch.Tensor], payload: bytes, chunk: int) -> PayloadCheck:
    check = PayloadCheck(manifest_of(tensors), len(payload))
    for start in range(0, len(payload), chunk):
        check.feed(payload[start : start + chunk])
    check.finish()
    return check


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 20])
def test_the_canonical_payload_passes_in_any_chunking(chunk: int) -> None:
    payload = encode(TENSORS)

    check = fed(TENSORS, payload, chunk)

    assert check.received == len(payload) == payload_size(manifest_of(TENSORS))


@pytest.mark.parametrize(
    ("name", "index", "value"),
    [
        ("a.weight", 13, math.nan),
        ("b.half", 6, math.inf),
        ("c.bf16", 0, -math.inf),
        ("d.double", 2, math.nan),
    ],
)
@pytest.mark.parametrize("chunk", [3, 4096])
def test_a_non_finite_value_is_refused_with_its_tensor_and_element(
    name: str, index: int, value: float, chunk: int
) -> None:
    tensors = {k: v.clone() for k, v in TENSORS.items()}
    tensors[name].view(-1)[index] = value

    with pytest.raises(InvalidArgument) as info:
        fed(tensors, encode(tensors), chunk)

    assert str(info.value) == (
        f"tensor {name!r} holds NaN or Inf at element {index}; a model's values must be finite"
    )


def test_integer_tensors_are_not_checked_for_finiteness() -> None:
    tensors = {"steps": torch.tensor([-1, 2**62], dtype=torch.int64)}

    assert fed(tensors, encode(tensors), 5).received == len(encode(tensors))


def test_a_payload_for_other_tensor_names_is_refused() -> None:
    announced = {"w": torch.zeros(2, 2)}
    sent = {"v": torch.zeros(2, 2)}
    payload = encode(sent)
    check = PayloadCheck(manifest_of(announced), len(payload))

    with pytest.raises(InvalidArgument) as info:
        check.feed(payload)

    assert str(info.value) == (
        "the payload's tensors differ from the manifest in the request header: only in the "
        "payload ['v'], only in the manifest ['w']"
    )


def test_a_payload_with_a_longer_header_is_refused_at_the_length_prefix() -> None:
    announced = {"w": torch.zeros(2, 2)}
    sent = {"w": torch.zeros(2, 2), "extra_tensor_name": torch.zeros(0)}
    check = PayloadCheck(manifest_of(announced), len(encode(announced)))

    with pytest.raises(InvalidArgument, match=r"^the payload's safetensors header is \d+ bytes"):
        check.feed(encode(sent)[:8])


def test_a_payload_longer_than_announced_is_refused_at_once() -> None:
    payload = encode(TENSORS)
    check = PayloadCheck(manifest_of(TENSORS), len(payload))
    check.feed(payload)

    with pytest.raises(InvalidArgument) as info:
        check.feed(b"\0")

    assert str(info.value) == (
        f"payload is longer than the {len(payload)} bytes announced in the request header"
    )


def test_a_payload_ending_early_is_refused_at_finish() -> None:
    payload = encode(TENSORS)
    check = PayloadCheck(manifest_of(TENSORS), len(payload))
    check.feed(payload[:5])

    with pytest.raises(InvalidArgument) as info:
        check.finish()

    assert str(info.value) == (
        f"payload ended after 5 bytes; the request header announced {len(payload)}"
    )
