"""AggregateRound of a secure round: the rule over the decoded bucket means.

The aggregator holds only bucket sums of at least `min_survivors` nodes. Each
is decoded into its bucket's mean and the robust rule runs over those means;
FedAvg weighs each by its contributors, so it is the mean over all of them.
Nodes weigh equally inside a bucket (the masked vector carries no sample
count). With differential privacy the noise is already in the sums (the nodes
added their shares), so nothing is added here; ε is the accountant's bound.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fedmesh.aggregation import AggregationResult, RuleSpec, aggregate
from fedmesh.errors import FailedPrecondition
from fedmesh.services.aggregator.central_privacy import PrivacySettings
from fedmesh.services.aggregator.contribution import Contribution
from fedmesh.services.aggregator.gaussian_privacy import epsilon_after
from fedmesh.services.aggregator.secure_sums import SecureSums, SecureSumStore
from fedmesh.store import Receipt


def bucket_contributions(sums: SecureSums, receipts: Mapping[str, Receipt]) -> list[Contribution]:
    """One contribution per stored bucket; every contributor must hold a receipt."""
    rows = []
    for bucket in sums.buckets:
        missing = [node for node in bucket.contributors if node not in receipts]
        if missing:
            raise FailedPrecondition(
                f"secure bucket {bucket.bucket} of round {sums.round_no} of run {sums.run_id} "
                f"has contributors without a receipt: {', '.join(missing)}"
            )
        rows.append(
            Contribution(
                node_id="",
                digest=bucket.digest,
                receipts=tuple(receipts[node] for node in bucket.contributors),
                label=f"bucket-{bucket.bucket}",
            )
        )
    return rows


def aggregate_buckets(
    spec: RuleSpec, sums: SecureSums, store: SecureSumStore, device: torch.device
) -> AggregationResult:
    """Decode each bucket's mean and run the rule over them (blocking; call in a thread)."""
    codec = sums.codec
    means = torch.stack(
        [
            codec.dequantize_mean(store.read(sums, bucket), len(bucket.contributors))
            for bucket in sums.buckets
        ]
    )
    weights = [float(len(bucket.contributors)) for bucket in sums.buckets]
    return aggregate(spec, means.to(device), weights)


def secure_epsilon(privacy: PrivacySettings, round_no: int) -> float:
    """ε after `round_no` rounds when the nodes' noise shares are in the sums; 0 without DP."""
    return epsilon_after(privacy, round_no) if privacy.enabled else 0.0
