import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmesh.aggregation import geometric_median


def objective(points: torch.Tensor, z: torch.Tensor) -> float:
    return float((points.double() - z.double()).norm(dim=1).sum())


def reference_weiszfeld(points: torch.Tensor, iterations: int = 2000) -> torch.Tensor:
    x = points.double()
    z = x.mean(dim=0)
    for _ in range(iterations):
        distances = (x - z).norm(dim=1).clamp(min=1e-12)
        z = (x / distances[:, None]).sum(dim=0) / (1 / distances).sum()
    return z


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 12), m=st.integers(1, 8), seed=st.integers(0, 2**31))
def test_geometric_median_reaches_the_reference_objective(n: int, m: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(n, m, generator=generator)
    best = objective(points, reference_weiszfeld(points))

    result = geometric_median(points)

    assert objective(points, result.aggregate) <= best * (1 + 1e-4) + 1e-5
    distances = (points.double() - result.aggregate.double()).norm(dim=1)
    assert [e.score for e in result.evidence] == pytest.approx(distances.tolist(), abs=1e-3)
    assert result.excluded == ()


def test_geometric_median_of_collinear_points_is_their_median() -> None:
    points = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [100.0, 100.0]])

    result = geometric_median(points)

    assert torch.allclose(result.aggregate, torch.tensor([2.0, 2.0]), atol=1e-3)
    assert "Weiszfeld weight" in result.evidence[4].reason


def test_geometric_median_refuses_bad_parameters() -> None:
    with pytest.raises(ValueError, match="smoothing and tolerance must be > 0"):
        geometric_median(torch.zeros(3, 2), smoothing=0.0)
