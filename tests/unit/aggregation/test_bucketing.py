import pytest
import torch

from fedmesh.aggregation import Rule, RuleSpec, aggregate, bucketing
from fedmesh.aggregation.bucketing import bucket_members


def test_buckets_partition_the_updates_reproducibly() -> None:
    members = bucket_members(11, 3, seed=7)

    assert sorted(i for bucket in members for i in bucket) == list(range(11))
    assert [len(bucket) for bucket in members] == [3, 3, 3, 2]
    assert bucket_members(11, 3, seed=7) == members
    assert bucket_members(11, 3, seed=8) != members


def test_bucket_means_are_weighted_by_samples() -> None:
    updates = torch.arange(12.0).reshape(6, 2)
    weights = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]

    buckets = bucketing(updates, weights, bucket_size=2, seed=0)

    for bucket, (members, weight) in enumerate(zip(buckets.members, buckets.weights, strict=True)):
        w = torch.tensor([weights[i] for i in members])
        expected = (updates[list(members)] * w[:, None]).sum(dim=0) / w.sum()
        assert torch.allclose(buckets.means[bucket], expected)
        assert weight == pytest.approx(float(w.sum()))


def test_fedavg_is_unchanged_by_bucketing() -> None:
    generator = torch.Generator().manual_seed(0)
    updates = torch.randn(9, 20, generator=generator)
    weights = torch.rand(9, generator=generator).add(0.5).tolist()

    plain = aggregate(RuleSpec(Rule.FEDAVG), updates, weights)
    bucketed = aggregate(RuleSpec(Rule.FEDAVG, bucket_size=4), updates, weights)

    assert torch.allclose(plain.aggregate, bucketed.aggregate, atol=1e-6)


def test_a_dropped_bucket_drops_its_members_with_the_bucket_named() -> None:
    updates = torch.cat([torch.zeros(8, 3), torch.full((2, 3), 1e4)])
    spec = RuleSpec(Rule.KRUM, f=1, bucket_size=2, seed=3)

    result = aggregate(spec, updates)

    assert len(result.buckets) == 5
    assert len(result.bucket_evidence) == 5
    for evidence in result.evidence:
        bucket = evidence.bucket
        assert bucket is not None
        assert evidence.index in result.buckets[bucket]
        assert evidence.excluded == result.bucket_evidence[bucket].excluded
        assert evidence.reason.startswith(f"in bucket {bucket} with updates ")
    spoiled = {b for b, members in enumerate(result.buckets) if {8, 9} & set(members)}
    assert {e.bucket for e in result.evidence if e.index in (8, 9)} == spoiled
    assert all(result.bucket_evidence[b].excluded for b in spoiled)
    assert torch.equal(result.aggregate, torch.zeros(3))


def test_bucketing_refuses_a_zero_bucket_size() -> None:
    with pytest.raises(ValueError, match="bucket_size must be ≥ 1, got 0"):
        bucketing(torch.zeros(3, 2), None, 0, 0)
