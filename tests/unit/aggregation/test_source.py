"""The blocked path equals the in-memory one, and never holds more than a block."""

from collections.abc import Iterator

import pytest
import torch

from fedmesh.aggregation import (
    Rule,
    RuleSpec,
    StreamingMean,
    TensorSource,
    aggregate,
    aggregate_source,
    min_participants,
)
from fedmesh.aggregation.source import UpdateSource


class RowSource:
    """Builds every block on demand from per-update seeds: the n×m matrix never exists."""

    def __init__(self, n: int, m: int, far: int) -> None:
        self.n, self.m, self.far = n, m, far
        self.weights = [float(i + 1) for i in range(n)]
        self.device = torch.device("cpu")
        self.widest = 0

    def row(self, index: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(index)
        row = torch.randn(self.m, generator=generator)
        return row * 1e3 if index >= self.n - self.far else row

    def iter_blocks(self, block_size: int) -> Iterator[tuple[int, torch.Tensor]]:
        rows = [self.row(i) for i in range(self.n)]
        for start in range(0, self.m, block_size):
            block = torch.stack([r[start : start + block_size] for r in rows])
            self.widest = max(self.widest, block.shape[1])
            yield start, block

    def matrix(self) -> torch.Tensor:
        return torch.stack([self.row(i) for i in range(self.n)])


@pytest.mark.parametrize("rule", list(Rule))
@pytest.mark.parametrize("bucket_size", [0, 2])
@pytest.mark.parametrize("block_size", [1, 7, 64])
def test_blocked_aggregation_equals_in_memory_aggregation(
    rule: Rule, bucket_size: int, block_size: int
) -> None:
    spec = RuleSpec(rule, f=1, bucket_size=bucket_size, seed=5)
    source = RowSource(min_participants(spec) + 3, 50, far=1)
    reference = torch.linspace(-1, 1, 50)

    blocked = aggregate_source(spec, source, block_size, reference)
    whole = aggregate(spec, source.matrix(), source.weights, reference)

    assert isinstance(source, UpdateSource)
    assert source.widest <= block_size
    assert torch.allclose(blocked.aggregate, whole.aggregate, atol=1e-4, rtol=1e-4)
    assert [e.excluded for e in blocked.evidence] == [e.excluded for e in whole.evidence]
    assert [e.clipped for e in blocked.evidence] == [e.clipped for e in whole.evidence]
    assert blocked.buckets == whole.buckets


def test_tensor_source_yields_views_covering_every_coordinate() -> None:
    updates = torch.arange(20.0).reshape(2, 10)
    source = TensorSource(updates)

    blocks = list(source.iter_blocks(4))

    assert [start for start, _ in blocks] == [0, 4, 8]
    assert torch.equal(torch.cat([b for _, b in blocks], dim=1), updates)
    assert blocks[0][1].data_ptr() == updates.data_ptr()


def test_a_block_size_below_one_is_refused() -> None:
    source = TensorSource(torch.zeros(3, 4))

    with pytest.raises(ValueError, match="block_size must be ≥ 1 coordinate, got 0"):
        aggregate_source(RuleSpec(Rule.FEDAVG), source, 0)


def test_streaming_mean_holds_one_accumulator_whatever_n() -> None:
    stream = StreamingMean(1000)
    for index in range(300):
        stream.add(torch.full((1000,), float(index)))

    assert stream.count == 300
    assert torch.allclose(stream.result(), torch.full((1000,), 149.5))
