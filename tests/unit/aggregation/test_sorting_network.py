import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmesh.aggregation.sorting_network import OrderStatistics, comparators, pruned_steps


def all_binary_columns(n: int) -> torch.Tensor:
    patterns = list(itertools.product((0.0, 1.0), repeat=n))
    return torch.tensor(patterns, dtype=torch.float32).T.contiguous()


@pytest.mark.parametrize("n", range(1, 13))
def test_network_sorts_every_binary_input(n: int) -> None:
    # Prepare: by the 0-1 principle, sorting every 0/1 input proves the network sorts.
    columns = all_binary_columns(n)
    statistics = OrderStatistics(n, range(n), columns.shape[1], columns.device)

    # Execute
    rows = statistics.select(columns)

    # Assert
    assert torch.equal(torch.stack(rows), columns.sort(dim=0).values)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 40),
    width=st.integers(1, 50),
    seed=st.integers(0, 2**31),
    data=st.data(),
)
def test_pruned_ranks_equal_a_full_sort(n: int, width: int, seed: int, data: st.DataObject) -> None:
    generator = torch.Generator().manual_seed(seed)
    block = torch.randint(-5, 5, (n, width), generator=generator).float()
    ranks = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=4))
    statistics = OrderStatistics(n, ranks, 64, block.device)

    rows = statistics.select(block)

    expected = block.sort(dim=0).values
    for rank, row in zip(ranks, rows, strict=True):
        assert torch.equal(row, expected[rank])


def test_select_leaves_the_input_block_untouched() -> None:
    block = torch.tensor([[3.0, 1.0], [1.0, 2.0], [2.0, 0.0]])
    original = block.clone()

    OrderStatistics(3, [0, 1, 2], 2, block.device).select(block)

    assert torch.equal(block, original)


def test_pruning_drops_comparators_that_no_requested_rank_needs() -> None:
    full = comparators(25)

    median_only = pruned_steps(25, (12,))

    assert len(full) == 140
    assert len(median_only) < len(full)
    assert {(low, high) for low, high, _, _ in median_only} <= set(full)


def test_bad_sizes_and_ranks_are_refused() -> None:
    with pytest.raises(ValueError, match="n ≥ 1"):
        comparators(0)
    with pytest.raises(ValueError, match=r"ranks must lie in 0\.\.2, got 3"):
        OrderStatistics(3, [3], 4, torch.device("cpu"))
