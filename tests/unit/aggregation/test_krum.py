import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmesh.aggregation import InsufficientUpdatesError, krum, multi_krum


def reference_scores(updates: torch.Tensor, f: int) -> torch.Tensor:
    """Krum scores straight from the paper: squared distances to the n−f−2 nearest others."""
    x = updates.double()
    n = x.shape[0]
    scores = []
    for i in range(n):
        others = sorted(float(((x[i] - x[j]) ** 2).sum()) for j in range(n) if j != i)
        scores.append(sum(others[: n - f - 2]))
    return torch.tensor(scores, dtype=torch.float64)


def random_updates(seed: int, n: int, m: int, scale: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, m, generator=generator) * scale


@settings(max_examples=40, deadline=None)
@given(
    f=st.integers(0, 3),
    extra=st.integers(0, 5),
    m=st.integers(1, 12),
    seed=st.integers(0, 2**31),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
)
def test_krum_selects_the_update_with_the_lowest_reference_score(
    f: int, extra: int, m: int, seed: int, scale: float
) -> None:
    updates = random_updates(seed, 2 * f + 3 + extra, m, scale)
    expected = reference_scores(updates, f)

    result = krum(updates, f)

    tolerance = 1e-4 * float(expected.abs().max()) + 1e-9
    winner = [i for i in range(updates.shape[0]) if torch.equal(result.aggregate, updates[i])]
    assert len(winner) == 1
    assert float(expected[winner[0]]) <= float(expected.min()) + tolerance
    got = torch.tensor([e.score for e in result.evidence], dtype=torch.float64)
    assert torch.allclose(got, expected, rtol=1e-4, atol=tolerance)
    cutoff = float(expected[winner[0]])
    clearly_worse = {i for i in range(updates.shape[0]) if float(expected[i]) > cutoff + tolerance}
    assert clearly_worse <= set(result.excluded) <= set(range(updates.shape[0])) - {winner[0]}


@settings(max_examples=40, deadline=None)
@given(
    f=st.integers(0, 3),
    extra=st.integers(0, 5),
    m=st.integers(1, 12),
    seed=st.integers(0, 2**31),
    data=st.data(),
)
def test_multi_krum_averages_the_m_lowest_reference_scores(
    f: int, extra: int, m: int, seed: int, data: st.DataObject
) -> None:
    n = 2 * f + 3 + extra
    keep = data.draw(st.integers(1, n - f))
    updates = random_updates(seed, n, m, 1.0)
    expected = reference_scores(updates, f)
    cutoff = float(expected.sort().values[keep - 1])
    tolerance = 1e-4 * float(expected.abs().max()) + 1e-9

    result = multi_krum(updates, f, keep)

    chosen = [e.index for e in result.evidence if e.reason.startswith("selected")]
    assert len(chosen) == keep
    assert all(float(expected[i]) <= cutoff + tolerance for i in chosen)
    assert torch.allclose(result.aggregate, updates[chosen].mean(dim=0), atol=1e-5)
    clearly_worse = {i for i in range(n) if float(expected[i]) > cutoff + tolerance}
    assert clearly_worse <= set(result.excluded) <= set(range(n)) - set(chosen)


def test_multi_krum_keeps_n_minus_f_by_default() -> None:
    updates = torch.tensor([[0.0], [0.1], [0.2], [0.3], [0.4], [0.5], [100.0]])

    result = multi_krum(updates, f=1)

    assert result.excluded == (6,)
    assert torch.allclose(result.aggregate, torch.tensor([0.25]))
    assert "above the 6 lowest" in result.evidence[6].reason


def test_krum_evidence_explains_selection_and_exclusion() -> None:
    updates = torch.tensor([[0.0], [1.0], [2.0], [3.0], [50.0]])

    result = krum(updates, f=1)

    assert result.rule == "krum"
    # Updates 1 and 2 tie on score 2; 2 is nearer to all the others, so it wins.
    assert result.aggregate.tolist() == [2.0]
    selected = result.evidence[2]
    assert not selected.excluded
    assert selected.score == pytest.approx(2.0)
    assert selected.reason.startswith("selected: Krum score 2 (squared distances to its 2 nearest)")
    tied = result.evidence[1]
    assert not tied.excluded
    assert tied.reason == (
        "left out on a tie: Krum score 2 equals the cut-off, so no evidence against it"
    )
    far = result.evidence[4]
    assert far.excluded
    assert far.score == pytest.approx(47.0**2 + 48.0**2)
    assert far.reason == "not selected: Krum score 4513 above the 1 lowest (cut-off 2)"


def test_identical_updates_give_no_evidence_against_anyone() -> None:
    updates = torch.ones(5, 3)

    result = krum(updates, f=1)

    assert result.excluded == ()
    assert "equals the cut-off, so no evidence against it" in result.evidence[3].reason


def test_krum_refuses_too_few_updates() -> None:
    with pytest.raises(InsufficientUpdatesError) as error:
        krum(torch.zeros(6, 2), f=2)

    assert str(error.value) == "krum needs n ≥ 2f+3 = 7 updates for f=2, got n=6"


def test_multi_krum_refuses_m_above_n_minus_f() -> None:
    with pytest.raises(InsufficientUpdatesError, match=r"max\(2f\+3, m\+f\) with m=5"):
        multi_krum(torch.zeros(5, 2), f=1, m=5)
