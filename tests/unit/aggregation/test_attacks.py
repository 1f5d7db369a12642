import pytest
import torch

from fedmesh.aggregation.attacks import (
    alie,
    alie_z,
    flip_labels,
    gaussian_noise,
    ipm,
    mimic,
    scaling,
    sign_flip,
)

HONEST = torch.tensor([[1.0, 0.0], [3.0, 2.0], [2.0, 1.0], [10.0, 1.0]])


def test_sign_flip_and_scaling_corrupt_the_own_update() -> None:
    own = torch.tensor([[1.0, -2.0]])

    assert sign_flip(own).tolist() == [[-1.0, 2.0]]
    assert scaling(own, 10.0).tolist() == [[10.0, -20.0]]


def test_gaussian_noise_has_the_requested_shape_and_spread() -> None:
    generator = torch.Generator().manual_seed(0)
    honest = torch.zeros(3, 20_000)

    noise = gaussian_noise(honest, 2, std=3.0, generator=generator)

    assert noise.shape == (2, 20_000)
    assert float(noise.std()) == pytest.approx(3.0, rel=0.02)


def test_label_flip_mirrors_the_classes() -> None:
    assert flip_labels(torch.tensor([0, 3, 9]), 10).tolist() == [9, 6, 0]
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.9"):
        flip_labels(torch.tensor([10]), 10)


def test_alie_sits_z_deviations_below_the_honest_mean() -> None:
    byzantine = alie(HONEST, f=2, n=6)

    z = alie_z(6, 2)
    expected = HONEST.mean(dim=0) - z * HONEST.std(dim=0)
    assert byzantine.shape == (2, 2)
    assert torch.allclose(byzantine[1], expected)
    # n=25, f=5: s = 13 − 5 = 8 supporters, z = Φ⁻¹(17/25).
    assert alie_z(25, 5) == pytest.approx(0.4677, abs=1e-4)


def test_ipm_sends_a_small_negative_multiple_of_the_honest_mean() -> None:
    assert ipm(HONEST, f=3, epsilon=0.5).tolist() == [[-2.0, -0.5]] * 3


def test_mimic_copies_the_most_atypical_honest_update() -> None:
    assert mimic(HONEST, f=2).tolist() == [[10.0, 1.0], [10.0, 1.0]]
    assert mimic(HONEST, f=1, target=1).tolist() == [[3.0, 2.0]]


def test_attacks_refuse_bad_parameters() -> None:
    with pytest.raises(ValueError, match="f must be ≥ 1 Byzantine update, got 0"):
        ipm(HONEST, f=0)
    with pytest.raises(ValueError, match=r"target must index an honest update \(0\.\.3\)"):
        mimic(HONEST, f=1, target=4)
    with pytest.raises(ValueError, match="ALIE needs 0 < f < n, got n=3, f=3"):
        alie_z(3, 3)
