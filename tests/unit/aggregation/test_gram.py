import pytest
import torch

from fedmesh.aggregation import TensorSource
from fedmesh.aggregation.gram import combine, geometry


def test_squared_distances_match_direct_differences() -> None:
    generator = torch.Generator().manual_seed(0)
    updates = torch.randn(6, 40, generator=generator)

    shape = geometry(TensorSource(updates), block_size=7)

    expected = torch.cdist(updates.double(), updates.double()) ** 2
    assert torch.allclose(shape.squared_distances(), expected, atol=1e-4)
    assert torch.equal(shape.gram, shape.gram.T)


def test_distances_to_a_combination_with_the_reference() -> None:
    generator = torch.Generator().manual_seed(1)
    updates = torch.randn(4, 9, generator=generator)
    reference = torch.randn(9, generator=generator)
    coefficients = torch.tensor([0.5, -1.0, 0.25, 2.0], dtype=torch.float64)
    source = TensorSource(updates)

    shape = geometry(source, 4, reference)
    point = combine(source, coefficients, 4, reference, offset=0.75)

    expected = (updates - point).norm(dim=1)
    assert torch.allclose(shape.distances_to(coefficients, 0.75).float(), expected, atol=1e-4)


def test_norms_only_geometry_refuses_pairwise_questions() -> None:
    updates = torch.tensor([[3.0, 4.0], [0.0, 1.0]])

    shape = geometry(TensorSource(updates), 2, pairwise=False)

    assert shape.distances_to(torch.zeros(2, dtype=torch.float64)).tolist() == [5.0, 1.0]
    with pytest.raises(ValueError, match="need the pairwise geometry"):
        shape.distances_to(torch.tensor([1.0, 0.0], dtype=torch.float64))
