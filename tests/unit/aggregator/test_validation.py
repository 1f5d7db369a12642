"""PayloadChecker on its own: chunk boundaries anywhere, even inside one float."""

import math

import pytest
import torch

from fedmesh.services.aggregator.validation import InvalidUpdate, PayloadChecker
from fedmesh.tensors import digest_tensors, encode, manifest_of


def tensors_with(value: float, index: int) -> dict[str, torch.Tensor]:
    weights = torch.arange(12, dtype=torch.float32)
    weights[index] = value
    return {"a": torch.ones(3), "b": weights.reshape(3, 4)}


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 8, 64, 4096])
def test_a_clean_payload_passes_whatever_the_chunk_size(chunk: int) -> None:
    tensors = tensors_with(0.5, 0)
    payload = encode(tensors)
    checker = PayloadChecker(manifest_of(tensors), digest_tensors(tensors), len(payload))

    for start in range(0, len(payload), chunk):
        checker.feed(payload[start : start + chunk])

    assert checker.finish() == digest_tensors(tensors)
    assert checker.received == len(payload)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 8, 64])
@pytest.mark.parametrize("index", [0, 5, 11])
def test_a_nan_is_found_whatever_the_chunk_size(chunk: int, index: int) -> None:
    tensors = tensors_with(math.nan, index)
    payload = encode(tensors)
    checker = PayloadChecker(manifest_of(tensors), digest_tensors(tensors), len(payload))

    def feed_all() -> None:
        for start in range(0, len(payload), chunk):
            checker.feed(payload[start : start + chunk])

    with pytest.raises(InvalidUpdate) as info:
        feed_all()

    assert str(info.value) == f"tensor 'b' holds NaN at element {index}; every value must be finite"
    assert info.value.reason == "non_finite"
