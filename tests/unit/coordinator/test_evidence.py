from fedmesh.services.coordinator.evidence import far_out_fence, suspected
from fedmesh.services.coordinator.ports import Verdict


def krum_round(scores: list[float], selected: int) -> list[Verdict]:
    return [
        Verdict(f"n{i}", excluded=i != selected, reason="not selected by krum", score=s)
        for i, s in enumerate(scores)
    ]


def test_an_honest_krum_round_is_no_evidence_although_it_excludes_n_minus_1() -> None:
    verdicts = krum_round([10.2, 9.8, 10.5, 11.0, 9.9, 10.7, 10.1], selected=1)

    assert sum(v.excluded for v in verdicts) == 6
    assert suspected(verdicts) == []


def test_an_update_far_from_the_rest_is_evidence() -> None:
    verdicts = krum_round([10.2, 9.8, 10.5, 11.0, 9.9, 10.7, 950.0], selected=1)

    assert [v.node_id for v in suspected(verdicts)] == ["n6"]


def test_an_unscored_rejection_is_evidence_and_a_kept_outlier_is_not() -> None:
    verdicts = [
        Verdict("bad", excluded=True, reason="rejected: NaN in layer 2"),
        Verdict("far-but-kept", excluded=False, reason="clipped", score=1e6),
        *krum_round([1.0, 1.1, 0.9, 1.2], selected=0),
    ]

    assert [v.node_id for v in suspected(verdicts)] == ["bad"]


def test_the_fence_is_q3_plus_three_iqr_and_needs_four_scores() -> None:
    assert far_out_fence([1.0, 2.0, 3.0, 4.0, 5.0]) == 4.0 + 3 * 2.0
    assert far_out_fence([1.0, 100.0, 1000.0]) == float("inf")


def test_a_verdict_without_a_node_is_never_evidence() -> None:
    # Secure rounds judge bucket means: the aggregator reports them with an empty node id.
    verdicts = [
        Verdict("", excluded=True, reason="bucket 2 rejected: out of range"),
        Verdict("", excluded=True, reason="bucket 3 excluded by krum", score=1e9),
        *krum_round([1.0, 1.1, 0.9, 1.2, 1.0], selected=0),
    ]

    assert suspected(verdicts) == []
