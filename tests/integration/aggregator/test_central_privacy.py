"""Central DP in AggregateRound: clipped, equally weighted, noised, ε recorded on the version."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fedmesh.privacy import ChaChaRandom, SampledGaussianAccountant
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.services.aggregator.gaussian_privacy import GaussianCentralPrivacy
from fedmesh.store.fencing import current_token
from fedmesh.tensors import flatten, manifest_of

from .conftest import signer_of

RUN, MODEL = "run-1", "detector"
PRIVACY = common.PrivacySpec(
    enabled=True, clip_norm=1.0, noise_multiplier=0.5, delta=1e-5, sampling_rate=0.1
)


async def test_a_private_round_clips_weighs_equally_adds_noise_and_records_epsilon(
    start_aggregator: Any,
) -> None:
    privacy = GaussianCentralPrivacy(ChaChaRandom.from_seed(b"\x07" * 32))
    async with start_aggregator(privacy=privacy) as aggregation:
        await aggregation.open_round()
        deltas = {
            "n1": aggregation.delta(1, scale=1.0),  # norm ≈ 11.7: clipped to 1
            "n2": aggregation.delta(2, scale=0.01),
            "n3": aggregation.delta(3, scale=0.01),
        }
        for samples, (node, delta) in enumerate(deltas.items(), start=1):
            await aggregation.client.submit_tensors(
                run_id=RUN, round_no=1, node_id=node, base_model=aggregation.base_ref,
                tensors=delta, num_samples=samples * 100, local_loss=0.5, signer=signer_of(node),
            )  # fmt: skip
        await aggregation.close_collection()

        response = await aggregation.client.aggregate_round(
            run_id=RUN,
            round_no=1,
            fencing_token=await current_token(aggregation.redis),
            aggregation=common.AggregationSpec(rule=common.AGGREGATION_RULE_FEDAVG),
            base_model=aggregation.base_ref,
            privacy=PRIVACY,
        )
        meta, published = await aggregation.registry.download_tensors(MODEL, 2)

    manifest = manifest_of(aggregation.base)
    clipped = []
    for delta in deltas.values():
        flat = flatten(delta, manifest).double()
        clipped.append(flat * min(1.0, 1.0 / float(flat.norm())))
    mean = torch.stack(clipped).mean(dim=0)
    noise = (
        flatten(published, manifest).double() - flatten(aggregation.base, manifest).double()
    ) - mean
    expected_std = 0.5 * 1.0 / 3  # σ = z·C on the sum, divided by 3 contributors
    assert float(noise.std()) == pytest.approx(expected_std, rel=0.25)
    assert abs(float(noise.mean())) < 4 * expected_std / noise.numel() ** 0.5
    epsilon = SampledGaussianAccountant(0.1, 0.5, 1e-5).epsilon_spent(1)
    assert response.epsilon_spent == pytest.approx(epsilon)
    assert (meta.epsilon_spent, meta.delta) == (pytest.approx(epsilon), pytest.approx(1e-5))
