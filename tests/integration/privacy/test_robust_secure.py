"""Robust + secure aggregation end to end: SecAgg+ bucket sums, a robust rule, Byzantine nodes.

Drives bench/robust_secure.py's pieces: real SecAgg+ rounds per bucket (`plan_buckets`,
`BucketPlan.configs`, `SecAggClient`/`SecAggServer`, the plan's `FixedPointCodec`),
`bucket_means`, and a robust rule over them, on bench/robustness.py's data and attacks.
"""

from __future__ import annotations

import random
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root: bench.*

from bench import robustness
from bench.robust_secure import (
    ExactnessLog,
    PlainBuckets,
    SecureBuckets,
    dropout_check,
    first_round_messages,
    plain_sum,
    robust_spec,
    secure_sum,
    spread_dropouts,
)
from bench.robustness import Aggregator, over_updates, train_with
from fedmesh.aggregation import Rule, RuleSpec
from fedmesh.privacy.secagg import plan_buckets

# robust + secure may trail the rule over individual messages by at most this (accuracy).
GAP_MARGIN = 0.05
SEEDS = (0, 1, 2)
ROUNDS = 120


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3])
def test_bucket_sums_equal_the_plain_fixed_point_sums_on_tiny_vectors(rate: float) -> None:
    nodes, length = 30, 16
    plan = plan_buckets(range(nodes), 6, b"tiny-round")
    codec = plan.codec(clip_range=1.0)
    generator = torch.Generator().manual_seed(7)
    # Values up to the clip range, both signs: the words wrap mod 2^32 when summed.
    values = (torch.rand(nodes, length, generator=generator) * 2 - 1).to(torch.float64)
    quantised = {node: codec.quantize(values[node]) for node in range(nodes)}
    dropped = spread_dropouts(plan, round(rate * nodes), random.Random(3))

    results = [
        secure_sum(config, quantised, dropped)
        for config in plan.configs(length, b"tiny-graph", b"tiny-round")
    ]

    assert len(dropped) == round(rate * nodes)
    assert len(results) == len(plan.buckets) == 5
    for bucket, result in zip(plan.buckets, results, strict=True):
        survivors = tuple(node for node in bucket if node not in dropped)
        assert result.contributors == survivors
        assert set(result.dropped) == set(bucket) & dropped
        expected = plain_sum(quantised[node] for node in survivors)
        assert result.total.dtype == expected.dtype == np.uint32
        assert np.array_equal(result.total, expected)


def test_a_wrong_plain_sum_is_told_apart() -> None:
    """The exactness check can fail: one word off in one input breaks the equality."""
    plan = plan_buckets(range(6), 3, b"seed")
    codec = plan.codec(clip_range=1.0)
    quantised = {node: codec.quantize(torch.full((4,), 0.25 * node - 0.5)) for node in range(6)}
    config = plan.configs(4, b"graph", b"round")[0]
    result = secure_sum(config, quantised)
    tampered = dict(quantised)
    first = config.participants[0]
    tampered[first] = quantised[first] + np.uint32(1)

    log = ExactnessLog()
    log.record(result, quantised)
    log.record(result, tampered)

    assert (log.buckets, log.exact, log.all_exact) == (2, 1, False)


def test_one_secure_step_matches_the_plain_bucket_step_to_the_fixed_point_resolution() -> None:
    data = robustness.split_non_iid(0)
    messages = first_round_messages("alie", 0, data)
    previous = torch.zeros(messages.shape[1])
    spec = robust_spec(Rule.CENTERED_CLIPPING)
    log = ExactnessLog()

    secure = SecureBuckets(spec, seed=0, log=log)(messages, previous, 0)
    plain = PlainBuckets(spec, seed=0)(messages, previous, 0)

    assert log.all_exact
    assert log.buckets == 12
    assert torch.allclose(secure, plain, rtol=0, atol=1e-6)
    assert not torch.equal(secure, torch.zeros_like(secure))


@pytest.mark.slow
@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_bucket_sums_stay_exact_when_nodes_drop_after_masking(rate: float) -> None:
    data = robustness.split_non_iid(0)
    messages = first_round_messages("sign_flip", 0, data)

    check = dropout_check(messages, rate, seed=0)

    assert check.nodes == robustness.CLIENTS
    assert check.dropped == {0.1: 3, 0.3: 8}[rate]
    assert check.buckets == 4
    assert check.exact_buckets == check.buckets


@pytest.mark.slow
@pytest.mark.parametrize(("attack", "advantage"), [("scaling", 0.5), ("sign_flip", 0.05)])
def test_robust_secure_accuracy_under_attack_stays_close_to_robust_only(
    attack: str, advantage: float
) -> None:
    """Centered clipping, f=5 of 25 Byzantine; mean test accuracy over 3 seeds.

    Measured by the bench (120 rounds): scaling 92.8 % secure, 93.7 % robust-only, 8.8 %
    FedAvg; sign_flip 84.7 %, 83.0 %, 73.9 %. FedAvg must trail by `advantage` or more.
    """
    spec = robust_spec(Rule.CENTERED_CLIPPING)
    log = ExactnessLog()
    accuracy: dict[str, list[float]] = {"fedavg": [], "robust_only": [], "robust_secure": []}
    for seed in SEEDS:
        data = robustness.split_non_iid(seed)
        aggregators: dict[str, Aggregator] = {
            "fedavg": over_updates(RuleSpec(Rule.FEDAVG)),
            "robust_only": over_updates(spec),
            "robust_secure": SecureBuckets(spec, seed, log=log),
        }
        for arm, aggregator in aggregators.items():
            accuracy[arm].append(train_with(aggregator, attack, 0.0, seed, ROUNDS, data))
    fedavg, robust_only, robust_secure = (
        statistics.fmean(accuracy[arm]) for arm in ("fedavg", "robust_only", "robust_secure")
    )

    assert log.buckets == len(SEEDS) * ROUNDS * 12
    assert log.exact == log.buckets
    assert robust_secure >= robust_only - GAP_MARGIN, accuracy
    assert robust_secure >= fedavg + advantage, accuracy
