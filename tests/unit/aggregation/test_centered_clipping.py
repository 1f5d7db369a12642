import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmesh.aggregation import InvalidUpdatesError, centered_clipping


def reference_clipping(
    points: torch.Tensor, start: torch.Tensor, tau: float, iterations: int
) -> torch.Tensor:
    x, v = points.double(), start.double()
    for _ in range(iterations):
        differences = x - v
        norms = differences.norm(dim=1, keepdim=True)
        scale = torch.where(norms > tau, tau / norms, torch.ones_like(norms))
        v = v + (differences * scale).mean(dim=0)
    return v


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 10),
    m=st.integers(1, 8),
    seed=st.integers(0, 2**31),
    tau=st.sampled_from([0.1, 1.0, 10.0]),
    iterations=st.integers(1, 5),
    with_reference=st.booleans(),
)
def test_centered_clipping_matches_the_direct_iteration(
    n: int, m: int, seed: int, tau: float, iterations: int, with_reference: bool
) -> None:
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(n, m, generator=generator) * 3
    start = torch.randn(m, generator=generator) if with_reference else None

    result = centered_clipping(points, start, tau, iterations)

    expected = reference_clipping(
        points, torch.zeros(m) if start is None else start, tau, iterations
    )
    assert torch.allclose(result.aggregate.double(), expected, atol=1e-4)
    assert result.excluded == ()


def test_clipped_updates_are_reported_with_their_distance() -> None:
    points = torch.tensor([[0.5, 0.0], [0.0, 0.5], [30.0, 40.0]])

    result = centered_clipping(points, torch.zeros(2), tau=1.0, iterations=1)

    assert result.clipped == (2,)
    assert result.evidence[2].score == pytest.approx(50.0)
    assert result.evidence[2].reason == "distance 50 to the centre above τ=1.0: scaled by 0.02"
    assert result.evidence[0].reason == "distance 0.5 to the centre within τ=1.0: kept whole"
    assert torch.allclose(result.aggregate, torch.tensor([(0.5 + 0.6) / 3, (0.5 + 0.8) / 3]))


def test_reference_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(InvalidUpdatesError, match=r"1-D tensor of 2 coordinates, got shape \(3,\)"):
        centered_clipping(torch.zeros(3, 2), torch.zeros(3))
