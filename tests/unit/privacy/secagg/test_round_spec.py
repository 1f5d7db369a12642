"""The secure round contract: its stored form, and the plan both sides derive from it."""

import math

import pytest

from fedmesh.privacy.secagg.round_spec import SecureRoundSpec, plan_round, round_context

NODES = [f"node-{i}" for i in range(10)]


def test_the_stored_form_round_trips_and_refuses_what_is_not_a_spec() -> None:
    spec = SecureRoundSpec(threshold=3, neighbours=4, bucket_size=5, clip_range=0.5)

    assert SecureRoundSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="not a secure round spec"):
        SecureRoundSpec.from_json('{"unknown": 1}')
    with pytest.raises(ValueError, match=r"clip_range is -1\.0; expected a positive number"):
        SecureRoundSpec(clip_range=-1.0)
    with pytest.raises(ValueError, match="bucket_size is -2; expected 0 or more"):
        SecureRoundSpec(bucket_size=-2)


def test_the_plan_is_the_same_for_the_same_round_and_indexes_sorted_node_ids() -> None:
    spec = SecureRoundSpec(bucket_size=3)
    first = plan_round(spec, NODES[::-1], 100, "run", 4, 1_000)
    again = plan_round(spec, NODES, 100, "run", 4, 1_000)
    other = plan_round(spec, NODES, 100, "run", 5, 1_000)

    assert first.participants == tuple(sorted(NODES))
    assert first.buckets == again.buckets
    assert first.buckets != other.buckets
    assert sorted(i for bucket in first.buckets.buckets for i in bucket) == list(range(10))
    assert first.index_of("node-3") == 3
    assert 3 in first.buckets.buckets[first.bucket_of(3)]
    with pytest.raises(KeyError, match="'node-x' is not a participant"):
        first.index_of("node-x")


def test_buckets_get_their_own_contexts_and_one_codec_for_the_largest() -> None:
    plan = plan_round(SecureRoundSpec(bucket_size=4, clip_range=0.25), NODES, 8, "run", 1, 7)

    assert [len(members) for members in plan.buckets.buckets] == [5, 5]
    contexts = {config.round_context for config in plan.configs}
    assert len(contexts) == 2
    assert all(c.startswith(round_context("run", 1)) for c in contexts)
    assert (plan.codec.clip_range, plan.codec.max_summands) == (0.25, 5)


def test_the_noise_share_sums_to_sigma_over_the_minimum_survivors() -> None:
    plan = plan_round(SecureRoundSpec(min_survivors=4, noise_stddev=2.0), NODES, 8, "run", 1, 7)

    assert plan.noise_share_stddev(0) == pytest.approx(2.0 / math.sqrt(4))
    quiet = plan_round(SecureRoundSpec(), NODES, 8, "run", 1, 7)
    assert quiet.noise_share_stddev(0) == 0.0


def test_settings_that_cannot_work_for_the_participants_are_refused() -> None:
    with pytest.raises(ValueError, match="min_survivors must be in \\[2, 3\\], got 5"):
        plan_round(SecureRoundSpec(bucket_size=3, min_survivors=5), NODES[:3], 8, "run", 1, 7)
    with pytest.raises(ValueError, match="needs at least 2 participants, got 1"):
        plan_round(SecureRoundSpec(), NODES[:1], 8, "run", 1, 7)
