"""Permutation invariance and robustness bounds, for every rule."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmesh.aggregation import Rule, RuleSpec, aggregate, min_participants

ROBUST = [r for r in Rule if r not in (Rule.FEDAVG, Rule.NORM_BOUNDING)]


def honest_and_byzantine(
    seed: int, honest: int, f: int, m: int, distance: float
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    good = torch.randn(honest, m, generator=generator)
    direction = torch.randn(f, m, generator=generator)
    direction = direction / direction.norm(dim=1, keepdim=True)
    return good, direction * distance


@settings(max_examples=60, deadline=None)
@given(
    rule=st.sampled_from(list(Rule)),
    f=st.integers(0, 2),
    extra=st.integers(0, 3),
    m=st.integers(1, 8),
    seed=st.integers(0, 2**31),
    data=st.data(),
)
def test_every_rule_is_invariant_to_the_order_of_updates(
    rule: Rule, f: int, extra: int, m: int, seed: int, data: st.DataObject
) -> None:
    spec = RuleSpec(rule, f=f)
    n = min_participants(spec) + extra
    generator = torch.Generator().manual_seed(seed)
    updates = torch.randn(n, m, generator=generator)
    order = data.draw(st.permutations(range(n)))

    before = aggregate(spec, updates)
    after = aggregate(spec, updates[list(order)])

    assert torch.allclose(before.aggregate, after.aggregate, atol=1e-4)
    assert [before.evidence[i].excluded for i in order] == [e.excluded for e in after.evidence]
    assert [before.evidence[i].clipped for i in order] == [e.clipped for e in after.evidence]


@settings(max_examples=60, deadline=None)
@given(
    rule=st.sampled_from(ROBUST),
    f=st.integers(1, 3),
    extra=st.integers(0, 3),
    m=st.integers(1, 8),
    seed=st.integers(0, 2**31),
    distance=st.sampled_from([1e3, 1e6, 1e9, 1e12]),
)
def test_far_byzantine_updates_cannot_drag_a_robust_rule_away(
    rule: Rule, f: int, extra: int, m: int, seed: int, distance: float
) -> None:
    spec = RuleSpec(rule, f=f, tau=1.0, clipping_iterations=3)
    n = min_participants(spec) + extra
    good, bad = honest_and_byzantine(seed, n - f, f, m, distance)
    updates = torch.cat([good, bad])
    centre = good.mean(dim=0)

    result = aggregate(spec, updates, reference=centre)

    out = result.aggregate.double()
    low, high = good.min(dim=0).values.double(), good.max(dim=0).values.double()
    spread = float((good - centre).norm(dim=1).max())
    if rule is Rule.KRUM:
        assert any(torch.equal(result.aggregate, row) for row in good)
    elif rule is Rule.MULTI_KRUM:
        assert torch.allclose(result.aggregate, centre, atol=1e-4)
    elif rule in (Rule.MEDIAN, Rule.TRIMMED_MEAN, Rule.BULYAN):
        assert torch.all((out >= low - 1e-5) & (out <= high + 1e-5))
    elif rule is Rule.GEOMETRIC_MEDIAN:
        # Honest points within r of c pull harder than f far ones push:
        # ‖z − c‖ ≤ r / sqrt(1 − (f/(n−f))²).
        bound = spread / math.sqrt(1 - (f / (n - f)) ** 2)
        assert float((out - centre.double()).norm()) <= bound * 1.01 + 1e-3
    else:
        # Each centered-clipping step moves the centre by at most τ.
        assert float((out - centre.double()).norm()) <= 3 * 1.0 + 1e-4
    byzantine = set(range(n - f, n))
    if rule in (Rule.KRUM, Rule.MULTI_KRUM, Rule.BULYAN):
        assert set(result.excluded) >= byzantine
    if rule is Rule.CENTERED_CLIPPING:
        assert set(result.clipped) >= byzantine


def test_fedavg_is_dragged_away_by_one_far_update() -> None:
    good, bad = honest_and_byzantine(0, 6, 1, 4, 1e6)

    result = aggregate(RuleSpec(Rule.FEDAVG), torch.cat([good, bad]))

    assert float((result.aggregate - good.mean(dim=0)).norm()) > 1e5
