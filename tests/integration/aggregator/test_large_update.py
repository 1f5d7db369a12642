"""A 1 GiB update through SubmitUpdate and AggregateRound: no 4 MiB or 2 GiB ceiling anywhere."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.store.fencing import current_token, next_token
from fedmesh.tensors import Manifest, TensorSpec, digest_chunks, encode_header

from .conftest import signer_of

RUN = "run-1"
GIB = 1 << 30
CHUNK = 1 << 20
MANIFEST = Manifest.of([TensorSpec("w", "float32", (GIB // 4,))])
HEADER = encode_header(MANIFEST)


def payload(value: float) -> Iterator[bytes]:
    """The canonical payload of a 1 GiB float32 tensor filled with ``value``, in 1 MiB chunks."""
    yield HEADER
    block = np.full(CHUNK // 4, value, dtype="<f4").tobytes()
    for _ in range(GIB // CHUNK):
        yield block


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_a_one_gib_update_is_accepted_and_aggregated(start_aggregator: Any) -> None:
    async with start_aggregator(max_update_bytes=2 * GIB, block_coordinates=0) as aggregation:
        await next_token(aggregation.redis)
        base = await aggregation.registry.publish(
            "huge-detector",
            payload(0.0),
            manifest=MANIFEST,
            digest=digest_chunks(payload(0.0)),
            size_bytes=len(HEADER) + GIB,
        )
        await aggregation.open_round(participants=("n1",), base_ref=base.ref)

        submitted = await aggregation.client.submit_update(
            run_id=RUN,
            round_no=1,
            node_id="n1",
            manifest=MANIFEST,
            digest=digest_chunks(payload(0.5)),
            num_samples=100,
            payload_bytes=len(HEADER) + GIB,
            base_model=base.ref,
            local_loss=0.1,
            chunks=lambda: payload(0.5),
            signer=signer_of("n1"),
            deadline_s=600,
        )
        await aggregation.close_collection()
        result = await aggregation.client.aggregate_round(
            run_id=RUN,
            round_no=1,
            fencing_token=await current_token(aggregation.redis),
            aggregation=common.AggregationSpec(rule=common.AGGREGATION_RULE_FEDAVG),
            base_model=base.ref,
            deadline_s=600,
        )

    assert (submitted.received_bytes, submitted.duplicate) == (len(HEADER) + GIB, False)
    assert (result.model.name, result.model.version) == ("huge-detector", 2)
    assert result.model.digest == digest_chunks(payload(0.5))
    assert result.updates_used == 1
