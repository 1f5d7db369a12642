import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmesh.aggregation import InsufficientUpdatesError, bulyan


def reference_bulyan(updates: torch.Tensor, f: int) -> tuple[torch.Tensor, list[int]]:
    """Bulyan as El Mhamdi et al. state it, on float64 vectors."""
    x = updates.double()
    n = x.shape[0]
    theta, beta = n - 2 * f, n - 4 * f
    remaining, chosen = list(range(n)), list[int]()
    while len(chosen) < theta:
        if len(remaining) == 1:
            chosen.append(remaining.pop())
            break
        k = max(1, len(remaining) - f - 2)
        distances = {
            i: sorted(float(((x[i] - x[j]) ** 2).sum()) for j in remaining if j != i)
            for i in remaining
        }
        # Krum score first; an exact tie goes to the update nearer to all the others.
        best = min(remaining, key=lambda i: (sum(distances[i][:k]), sum(distances[i]), i))
        remaining.remove(best)
        chosen.append(best)
    selected = x[chosen]
    median = selected.median(dim=0).values
    if theta % 2 == 0:
        median = torch.quantile(selected, 0.5, dim=0)
    closest = (selected - median).abs().argsort(dim=0, stable=True)[:beta]
    return torch.gather(selected, 0, closest).mean(dim=0), chosen


@settings(max_examples=30, deadline=None)
@given(
    f=st.integers(0, 2),
    extra=st.integers(0, 4),
    m=st.integers(1, 10),
    seed=st.integers(0, 2**31),
)
def test_bulyan_matches_the_paper_definition(f: int, extra: int, m: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    updates = torch.randn(4 * f + 3 + extra, m, generator=generator)
    expected, chosen = reference_bulyan(updates, f)

    result = bulyan(updates, f)

    assert torch.allclose(result.aggregate.double(), expected, atol=1e-5)
    not_chosen = set(range(updates.shape[0])) - set(chosen)
    assert {e.index for e in result.evidence if "not among" in e.reason} == not_chosen
    assert not_chosen <= set(result.excluded)


def test_bulyan_drops_far_updates_in_its_krum_phase() -> None:
    updates = torch.cat([torch.arange(7.0)[:, None] * torch.ones(1, 3), torch.full((1, 3), 1e6)])

    result = bulyan(updates, f=1)

    assert 7 in result.excluded
    assert result.evidence[7].score == 1.0
    assert result.evidence[7].reason.startswith("not among the 6 chosen by recursive Krum")
    assert torch.all((result.aggregate >= 0) & (result.aggregate <= 6))


def test_bulyan_refuses_fewer_than_4f_plus_3() -> None:
    with pytest.raises(InsufficientUpdatesError) as error:
        bulyan(torch.zeros(10, 2), f=2)

    assert str(error.value) == "bulyan needs n ≥ 4f+3 = 11 updates for f=2, got n=10"
