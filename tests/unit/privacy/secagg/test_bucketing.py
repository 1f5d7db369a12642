"""Robust + secure: buckets summed by their own SecAgg+ rounds, a robust rule over bucket means."""

from collections.abc import Callable

import pytest
import torch

from fedmesh.privacy.secagg import ClientStage, SecAggResult, bucket_means, plan_buckets

Driver = Callable[..., SecAggResult]


def test_buckets_partition_the_participants_into_sizes_s_or_s_plus_one() -> None:
    plan = plan_buckets(range(23), 5, b"round-seed")

    assert sorted(map(len, plan.buckets)) == [5, 6, 6, 6]
    assert sorted(node for bucket in plan.buckets for node in bucket) == list(range(23))


def test_bucket_assignment_is_reproducible_from_the_seed() -> None:
    assert plan_buckets(range(20), 4, b"a") == plan_buckets(range(20), 4, b"a")
    assert plan_buckets(range(20), 4, b"a") != plan_buckets(range(20), 4, b"b")


@pytest.mark.parametrize(
    ("participants", "size", "message"),
    [
        (range(10), 1, r"bucket_size must be >= 2 \(a bucket's sum is revealed\), got 1"),
        (range(3), 4, "3 participants cannot fill one bucket of 4"),
        ([1, 1, 2], 2, "participants must be distinct"),
    ],
)
def test_invalid_plans_are_refused(
    participants: range | list[int], size: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        plan_buckets(list(participants), size, b"seed")


def test_each_bucket_has_its_own_graph_and_round_context() -> None:
    configs = plan_buckets(range(12), 4, b"seed").configs(16, b"graph", b"run-b/round-1")

    assert [config.round_context for config in configs] == [
        b"run-b/round-1/bucket/0",
        b"run-b/round-1/bucket/1",
        b"run-b/round-1/bucket/2",
    ]
    assert all(config.graph.nodes == frozenset(config.participants) for config in configs)


def test_bucket_means_are_the_means_of_the_surviving_bucket_members(secagg_round: Driver) -> None:
    plan = plan_buckets(range(12), 4, b"seed")
    codec = plan.codec(clip_range=1.0)
    generator = torch.Generator().manual_seed(2)
    deltas = {node: torch.rand(32, generator=generator) * 2 - 1 for node in range(12)}
    dropped = plan.buckets[1][0]

    results = [
        secagg_round(
            config,
            {n: codec.quantize(deltas[n]) for n in config.participants},
            {dropped: ClientStage.MASKED_INPUT},
        )
        for config in plan.configs(32, b"graph", b"run-b/round-2")
    ]
    means = bucket_means(results, codec)

    assert means.shape == (3, 32)
    for row, result in zip(means, results, strict=True):
        expected = torch.stack([deltas[node] for node in result.contributors]).mean(0)
        assert torch.allclose(row, expected, atol=1e-6)
    assert dropped not in results[1].contributors


def test_a_robust_rule_over_bucket_means_resists_a_byzantine_node(secagg_round: Driver) -> None:
    plan = plan_buckets(range(15), 3, b"seed")
    codec = plan.codec(clip_range=1.0)
    generator = torch.Generator().manual_seed(4)
    honest = {node: 0.1 + 0.01 * torch.randn(64, generator=generator) for node in range(15)}
    byzantine = 0
    updates = {node: codec.quantize(delta) for node, delta in honest.items()}
    updates[byzantine] = codec.quantize(torch.full((64,), -1.0))  # the worst in-range update

    results = [
        secagg_round(config, {n: updates[n] for n in config.participants})
        for config in plan.configs(64, b"graph", b"run-b/round-3")
    ]
    means = bucket_means(results, codec)

    honest_mean = torch.stack(list(honest.values())).mean(0)
    assert float((means.mean(0) - honest_mean).abs().max()) > 0.05  # plain averaging is pulled
    assert float((means.median(0).values - honest_mean).abs().max()) < 0.03


def test_no_results_are_refused() -> None:
    plan = plan_buckets(range(4), 2, b"seed")

    with pytest.raises(ValueError, match="no bucket results to decode"):
        bucket_means([], plan.codec(1.0))
