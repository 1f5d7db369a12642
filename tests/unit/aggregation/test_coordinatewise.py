import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmesh.aggregation import InsufficientUpdatesError, coordinate_median, trimmed_mean


def integer_updates(seed: int, n: int, m: int) -> torch.Tensor:
    # Small integers make ties between updates common.
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(-4, 5, (n, m), generator=generator).float()


def reference_trimmed(updates: torch.Tensor, trim: int) -> torch.Tensor:
    ordered = updates.double().sort(dim=0).values
    return ordered[trim : updates.shape[0] - trim].mean(dim=0)


def reference_outside_share(updates: torch.Tensor, trim: int) -> list[float]:
    ordered = updates.sort(dim=0).values
    low, high = ordered[trim], ordered[updates.shape[0] - 1 - trim]
    outside = (updates < low) | (updates > high)
    return outside.double().mean(dim=1).tolist()


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 15), m=st.integers(1, 20), seed=st.integers(0, 2**31))
def test_median_matches_the_sorted_middle(n: int, m: int, seed: int) -> None:
    updates = integer_updates(seed, n, m)

    result = coordinate_median(updates)

    expected = torch.quantile(updates.double(), 0.5, dim=0)
    assert torch.allclose(result.aggregate.double(), expected)
    assert [e.score for e in result.evidence] == pytest.approx(
        reference_outside_share(updates, (n - 1) // 2)
    )


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 15), m=st.integers(1, 20), seed=st.integers(0, 2**31), data=st.data())
def test_trimmed_mean_matches_a_sort_and_trim(
    n: int, m: int, seed: int, data: st.DataObject
) -> None:
    trim = data.draw(st.integers(0, (n - 1) // 2))
    updates = integer_updates(seed, n, m)

    result = trimmed_mean(updates, trim)

    assert torch.allclose(result.aggregate.double(), reference_trimmed(updates, trim), atol=1e-6)
    shares = reference_outside_share(updates, trim)
    assert [e.score for e in result.evidence] == pytest.approx(shares)
    assert result.excluded == tuple(i for i, share in enumerate(shares) if share == 1.0)


def test_trimmed_update_is_excluded_only_when_outside_at_every_coordinate() -> None:
    updates = torch.tensor(
        [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [90.0, 2.5], [-90.0, -90.0]]
    )

    result = trimmed_mean(updates, 1)

    assert result.excluded == (5,)
    assert result.evidence[4].score == pytest.approx(0.5)
    assert not result.evidence[4].excluded
    assert result.evidence[4].reason == (
        "trimmed mean (trim 1 per side): value outside the kept range at 50.0% of 2 coordinates"
    )
    assert result.evidence[5].reason == (
        "trimmed mean (trim 1 per side): value outside the kept range at every one of 2 coordinates"
    )
    assert torch.allclose(result.aggregate, torch.tensor([1.5, 1.375]))


def test_equal_values_are_never_evidence() -> None:
    result = coordinate_median(torch.full((5, 4), 2.0))

    assert result.excluded == ()
    assert [e.score for e in result.evidence] == [0.0] * 5


def test_median_keeps_huge_outliers_out() -> None:
    updates = torch.tensor([[1.0], [2.0], [3.0], [3e38], [-3e38]])

    assert coordinate_median(updates).aggregate.tolist() == [2.0]


def test_trimmed_mean_refuses_too_few_updates() -> None:
    with pytest.raises(InsufficientUpdatesError) as error:
        trimmed_mean(torch.zeros(4, 3), 2)

    assert str(error.value) == "trimmed_mean needs n ≥ 2·trim+1 = 5 updates for trim=2, got n=4"
