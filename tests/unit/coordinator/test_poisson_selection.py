"""Poisson selection: each eligible node independently with probability q, reproducibly.

The distribution checks use fixed seeds, so they are deterministic; their bounds
are at least four standard errors wide, so a correct sampler is far inside them.
"""

import itertools
import statistics

import pytest

from fedmesh.services.coordinator.nodes import Node
from fedmesh.services.coordinator.selection import poisson_participants
from fedmesh.services.coordinator.spec import MAX_PARTICIPANTS

N, Q, ROUNDS = 200, 0.1, 1000


def node(node_id: str, trust: float = 1.0) -> Node:
    return Node(node_id, 10, "r", {}, trust, 0, False, 0)


POOL = [node(f"n{i:03d}") for i in range(N)]


@pytest.fixture(scope="module")
def draws() -> list[list[str]]:
    return [poisson_participants(POOL, Q, seed=11, round_no=r) for r in range(1, ROUNDS + 1)]


def test_the_same_seed_and_round_draw_the_same_nodes_in_any_order() -> None:
    first = poisson_participants(POOL, Q, seed=5, round_no=3)

    assert first == poisson_participants(list(reversed(POOL)), Q, seed=5, round_no=3)
    assert first == sorted(set(first))
    assert first != poisson_participants(POOL, Q, seed=5, round_no=4)
    assert first != poisson_participants(POOL, Q, seed=6, round_no=3)


def test_a_nodes_draw_does_not_depend_on_the_other_eligible_nodes() -> None:
    whole = poisson_participants(POOL, 0.3, seed=2, round_no=9)
    half = POOL[::2]

    assert poisson_participants(half, 0.3, seed=2, round_no=9) == [
        n for n in whole if n in {m.node_id for m in half}
    ]


def test_the_mean_count_is_n_times_q(draws: list[list[str]]) -> None:
    counts = [len(d) for d in draws]

    # Standard error of the mean: sqrt(N·q·(1−q) / ROUNDS) ≈ 0.13.
    assert statistics.fmean(counts) == pytest.approx(N * Q, abs=0.6)


def test_the_count_varies_as_a_binomial_so_draws_are_not_correlated(
    draws: list[list[str]],
) -> None:
    counts = [len(d) for d in draws]

    # Binomial variance N·q·(1−q) = 18; correlated inclusions would inflate it, a fixed
    # count would make it 0. Standard error of the sample variance ≈ 18·sqrt(2/999) ≈ 0.8.
    assert statistics.variance(counts) == pytest.approx(N * Q * (1 - Q), abs=4.0)


def test_every_node_is_drawn_at_rate_q(draws: list[list[str]]) -> None:
    frequency = {n.node_id: 0 for n in POOL}
    for drawn in draws:
        for node_id in drawn:
            frequency[node_id] += 1

    # Per node: standard error sqrt(q(1−q)/ROUNDS) ≈ 0.0095; 0.05 is over five of them.
    rates = [count / ROUNDS for count in frequency.values()]
    assert min(rates) > Q - 0.05
    assert max(rates) < Q + 0.05


def test_consecutive_rounds_are_independent(draws: list[list[str]]) -> None:
    overlaps = [len(set(a) & set(b)) for a, b in itertools.pairwise(draws)]

    # Independent rounds share N·q² = 2 nodes on average (standard error ≈ 0.045).
    assert statistics.fmean(overlaps) == pytest.approx(N * Q * Q, abs=0.3)


def test_trust_plays_no_part() -> None:
    trusted = [node(f"t{i:03d}", 1.0) for i in range(100)]
    doubtful = [node(f"d{i:03d}", 0.5) for i in range(100)]
    picks = [
        p
        for r in range(400)
        for p in poisson_participants(trusted + doubtful, 0.2, seed=1, round_no=r)
    ]

    share = sum(1 for p in picks if p.startswith("t")) / len(picks)
    # About 16,000 picks; the trusted half's share has a standard error of about 0.004.
    assert share == pytest.approx(0.5, abs=0.03)


def test_no_cap_and_no_over_selection() -> None:
    large = [node(f"n{i:04d}") for i in range(1000)]

    drawn = poisson_participants(large, 0.1, seed=4, round_no=1)

    assert len(drawn) > MAX_PARTICIPANTS  # Binomial(1000, 0.1): 100 ± 9.5
    assert 60 <= len(drawn) <= 140


def test_rates_zero_and_one_draw_nobody_and_everybody() -> None:
    assert poisson_participants(POOL, 0.0, seed=1, round_no=1) == []
    assert poisson_participants(POOL, 1.0, seed=1, round_no=1) == sorted(n.node_id for n in POOL)


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_a_rate_outside_zero_to_one_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match=rf"sampling rate is {rate}; expected a value in \[0, 1\]"):
        poisson_participants(POOL, rate, seed=1, round_no=1)
