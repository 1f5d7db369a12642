import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmesh.aggregation import InvalidUpdatesError, StreamingMean, fedavg


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 12), m=st.integers(1, 30), seed=st.integers(0, 2**31))
def test_fedavg_is_the_sample_weighted_mean(n: int, m: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    updates = torch.randn(n, m, generator=generator)
    weights = (torch.rand(n, generator=generator) * 100 + 1).tolist()

    result = fedavg(updates, weights)

    w = torch.tensor(weights, dtype=torch.float64)
    expected = (updates.double() * w[:, None]).sum(dim=0) / w.sum()
    assert torch.allclose(result.aggregate.double(), expected, atol=1e-5)
    assert result.excluded == ()
    assert result.clipped == ()


def test_fedavg_without_weights_is_the_plain_mean() -> None:
    updates = torch.tensor([[1.0, 2.0], [3.0, 6.0]])

    assert fedavg(updates).aggregate.tolist() == [2.0, 4.0]


def test_streaming_mean_equals_fedavg() -> None:
    generator = torch.Generator().manual_seed(1)
    updates = torch.randn(7, 40, generator=generator)
    weights = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0]
    stream = StreamingMean(40)

    for row, weight in zip(updates, weights, strict=True):
        stream.add(row, weight)

    assert stream.count == 7
    assert torch.allclose(stream.result(), fedavg(updates, weights).aggregate, atol=1e-6)


def test_streaming_mean_refuses_bad_input() -> None:
    stream = StreamingMean(3)
    with pytest.raises(InvalidUpdatesError, match="no update was added"):
        stream.result()
    with pytest.raises(InvalidUpdatesError, match="update has 2 coordinates, expected 3"):
        stream.add(torch.zeros(2))
    with pytest.raises(InvalidUpdatesError, match=r"weight must be finite and > 0, got -1\.0"):
        stream.add(torch.zeros(3), -1.0)
    stream.add(torch.tensor([1.0, float("nan"), 0.0]))
    with pytest.raises(InvalidUpdatesError, match="FedAvg aggregate is not finite"):
        stream.result()
    with pytest.raises(ValueError, match="m must be ≥ 1"):
        StreamingMean(0)


def test_fedavg_refuses_bad_weights() -> None:
    updates = torch.zeros(2, 3)
    with pytest.raises(InvalidUpdatesError, match=r"one value per update \(2\), got 1"):
        fedavg(updates, [1.0])
    with pytest.raises(InvalidUpdatesError, match=r"weights must be finite and > 0, got 0\.0"):
        fedavg(updates, [1.0, 0.0])
    with pytest.raises(InvalidUpdatesError, match="weights must be finite and > 0, got nan"):
        fedavg(updates, [1.0, float("nan")])
