"""AggregateRound: the round's rule over its spooled deltas, base + aggregate published.

Idempotent by (run, round): the result is stored once published, and a repeated
call returns it without aggregating or publishing again. The torch work runs in
a worker thread so the event loop keeps receiving updates meanwhile.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mmap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import redis.asyncio as aioredis
import torch

from fedmesh.aggregation import AggregationResult, Rule, RuleSpec, aggregate_source
from fedmesh.aggregation.source import default_block_size
from fedmesh.aggregation.spec import check_participants
from fedmesh.errors import DataLoss, FailedPrecondition
from fedmesh.privacy.secagg.round_spec import ROUND_FIELD
from fedmesh.services.aggregator.base_model import BaseManifests
from fedmesh.services.aggregator.central_privacy import (
    CentralPrivacy,
    PrivacySettings,
    require_privacy_step,
)
from fedmesh.services.aggregator.contribution import node_contribution
from fedmesh.services.aggregator.locks import KeyedLocks
from fedmesh.services.aggregator.metrics import AggregatorMetrics
from fedmesh.services.aggregator.results import NodeEvidence, RoundResult, RoundResults
from fedmesh.services.aggregator.secure_release import (
    aggregate_buckets,
    bucket_contributions,
    secure_epsilon,
)
from fedmesh.services.aggregator.secure_sums import SecureSums, SecureSumStore
from fedmesh.services.aggregator.spool import SpooledUpdate, SpoolKey, UpdateSpool
from fedmesh.services.aggregator.spool_source import SpoolSource
from fedmesh.services.aggregator.update import ModelRef
from fedmesh.store import Phase, Receipt, RoundStore
from fedmesh.store.fencing import require_current
from fedmesh.tensors import Manifest, encode_header

log = logging.getLogger(__name__)

_PUBLISH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class AggregationRequest:
    """What the coordinator asks for: which round, under which token, with which rule."""

    run_id: str
    round_no: int
    fencing_token: int
    spec: RuleSpec
    base_model: ModelRef
    privacy: PrivacySettings


@dataclass(frozen=True)
class ModelRelease:
    """A new model version and what produced it, as the registry records it."""

    name: str
    parent_version: int
    run_id: str
    round_no: int
    rule: Rule
    participant_update_digests: tuple[str, ...]
    rejected: dict[str, str]
    epsilon_spent: float
    delta: float
    manifest: Manifest
    digest: str
    size_bytes: int
    fencing_token: int


class ModelRegistry(Protocol):
    """The registry as the aggregator uses it: fetch a base model, publish a new one."""

    async def fetch(self, ref: ModelRef, path: Path) -> None:
        """Write the canonical payload of ``ref`` to ``path``, its digest checked."""
        ...

    async def publish(self, release: ModelRelease, chunks: Iterator[bytes]) -> ModelRef:
        """Publish a version (idempotent by run and round) and return its reference."""
        ...


@dataclass(frozen=True)
class _Computed:
    model: torch.Tensor
    result: AggregationResult
    epsilon_spent: float
    digest: str


class RoundAggregator:
    """Runs AggregateRound against the spool, Redis and the registry."""

    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        rounds: RoundStore,
        results: RoundResults,
        spool: UpdateSpool,
        manifests: BaseManifests,
        registry: ModelRegistry,
        metrics: AggregatorMetrics,
        device: torch.device,
        secure_sums: SecureSumStore,
        block_coordinates: int = 0,
        privacy: CentralPrivacy | None = None,
    ) -> None:
        self._redis = redis
        self._rounds = rounds
        self._results = results
        self._spool = spool
        self._manifests = manifests
        self._registry = registry
        self._metrics = metrics
        self._device = device
        self._block_coordinates = block_coordinates
        self._privacy = privacy
        self._secure_sums = secure_sums
        self._locks = KeyedLocks()

    async def aggregate(self, request: AggregationRequest) -> RoundResult:
        """Aggregate and publish the round, or return the result it already has."""
        run_id, round_no = request.run_id, request.round_no
        await require_current(
            self._redis,
            request.fencing_token,
            f"AggregateRound of round {round_no} of run {run_id}",
        )
        async with self._locks.hold((run_id, round_no)):
            stored = await self._results.get(run_id, round_no)
            if stored is not None:
                return stored
            result = await self._aggregate(request)
            stored = await self._results.put(run_id, round_no, result)
        await self._spool.remove_round(run_id, round_no)
        await asyncio.to_thread(self._secure_sums.remove, run_id, round_no)
        self._metrics.aggregated(result.aggregation_seconds)
        return stored

    async def _aggregate(self, request: AggregationRequest) -> RoundResult:
        run_id, round_no = request.run_id, request.round_no
        record = await self._rounds.get(run_id, round_no)
        if record.phase is not Phase.AGGREGATING:
            raise FailedPrecondition(
                f"round {round_no} of run {run_id} is {record.phase.value}, not AGGREGATING"
            )
        base = ModelRef.from_round_field(record.fields.get("base_model"), run_id, round_no)
        if request.base_model != base:
            raise FailedPrecondition(
                f"AggregateRound names base model {request.base_model}; round {round_no} of "
                f"run {run_id} was opened on {base}"
            )
        sums: SecureSums | None = None
        if ROUND_FIELD in record.fields:
            sums = await asyncio.to_thread(self._secure_sums.load, run_id, round_no)
            if sums is None:
                raise FailedPrecondition(
                    f"round {round_no} of run {run_id} uses secure aggregation and no bucket "
                    "sum of it is stored; its SecAgg+ stages did not finish on this aggregator"
                )
            rows = bucket_contributions(sums, record.receipts)
        else:
            require_privacy_step(request.privacy, self._privacy)
            rows = [node_contribution(r) for r in sorted(record.receipts.values(), key=_by_node)]
        check_participants(request.spec, len(rows))
        manifest = await self._manifests.manifest(base)
        started = time.perf_counter()
        base_path = self._spool.scratch_path(".base")
        try:
            await self._registry.fetch(base, base_path)
            if sums is None:
                computed = await asyncio.to_thread(
                    self._compute, request, [row.receipts[0] for row in rows], manifest, base_path
                )
            else:
                computed = await asyncio.to_thread(
                    self._compute_secure, request, sums, manifest, base_path
                )
        finally:
            await asyncio.to_thread(base_path.unlink, True)
        header = encode_header(manifest)
        evidence = computed.result.evidence
        excluded = {e.index for e in evidence if e.excluded}
        used = [row for i, row in enumerate(rows) if i not in excluded]
        release = ModelRelease(
            name=base.name,
            parent_version=base.version,
            run_id=run_id,
            round_no=round_no,
            rule=request.spec.rule,
            participant_update_digests=tuple(row.digest for row in used),
            rejected={rows[e.index].label: e.reason for e in evidence if e.excluded},
            epsilon_spent=computed.epsilon_spent,
            delta=request.privacy.delta if request.privacy.enabled else 0.0,
            manifest=manifest,
            digest=computed.digest,
            size_bytes=len(header) + manifest.nbytes,
            fencing_token=request.fencing_token,
        )
        model = await self._registry.publish(release, _payload_chunks(header, computed.model))
        seconds = time.perf_counter() - started
        contributors = [receipt for row in used for receipt in row.receipts]
        log.info(
            "round aggregated",
            extra={
                "fields": {
                    "run_id": run_id,
                    "round": round_no,
                    "rule": request.spec.rule.value,
                    "secure": sums is not None,
                    "rows": len(rows),
                    "excluded": len(excluded),
                    "model_version": model.version,
                    "seconds": round(seconds, 3),
                }
            },
        )
        return RoundResult(
            model=model,
            evidence=tuple(
                NodeEvidence(
                    node_id=rows[e.index].node_id,
                    digest=rows[e.index].digest,
                    score=e.score,
                    excluded=e.excluded,
                    clipped=e.clipped,
                    reason=rows[e.index].explain(e.reason),
                )
                for e in evidence
            ),
            updates_used=len(contributors),
            mean_local_loss=_mean_loss(contributors),
            epsilon_spent=computed.epsilon_spent,
            aggregation_seconds=seconds,
        )

    def _compute_secure(
        self, request: AggregationRequest, sums: SecureSums, manifest: Manifest, base_path: Path
    ) -> _Computed:
        result = aggregate_buckets(request.spec, sums, self._secure_sums, self._device)
        aggregate = result.aggregate.to("cpu", torch.float32)
        return self._finish(
            aggregate,
            result,
            secure_epsilon(request.privacy, request.round_no),
            manifest,
            base_path,
        )

    def _compute(
        self,
        request: AggregationRequest,
        receipts: Sequence[Receipt],
        manifest: Manifest,
        base_path: Path,
    ) -> _Computed:
        data_offset = len(encode_header(manifest))
        m = manifest.numel
        opened: list[SpooledUpdate] = []
        try:
            for receipt in receipts:
                key = SpoolKey(request.run_id, request.round_no, receipt.node_id, receipt.digest)
                opened.append(self._spool.open(key))
            source = SpoolSource(
                opened, data_offset, m, [r.num_samples for r in receipts], self._device
            )
            block = self._block_coordinates or default_block_size(source.n, self._device)
            if request.privacy.enabled:
                source = _clipped_uniform(source, opened, data_offset, m, block, request.privacy)
            result = aggregate_source(request.spec, source, block)
        finally:
            for update in opened:
                update.close()
        aggregate = result.aggregate.to("cpu", torch.float32)
        epsilon = 0.0
        if request.privacy.enabled and self._privacy is not None:
            private = self._privacy(aggregate, request.privacy, len(receipts), request.round_no)
            aggregate, epsilon = private.aggregate.to("cpu", torch.float32), private.epsilon_spent
        return self._finish(aggregate, result, epsilon, manifest, base_path)

    @staticmethod
    def _finish(
        aggregate: torch.Tensor,
        result: AggregationResult,
        epsilon: float,
        manifest: Manifest,
        base_path: Path,
    ) -> _Computed:
        header = encode_header(manifest)
        model = _add_base(aggregate, base_path, len(header), manifest.numel)
        hasher = hashlib.sha256(header)
        hasher.update(_bytes_of(model))
        return _Computed(model, result, epsilon, hasher.hexdigest())


def _clipped_uniform(
    source: SpoolSource,
    opened: Sequence[SpooledUpdate],
    data_offset: int,
    m: int,
    block: int,
    privacy: PrivacySettings,
) -> SpoolSource:
    """The updates clipped to the run's L2 norm C, equally weighted (DP-FedAvg).

    Nodes clip before sending; clipping again here bounds each node's influence
    (the sensitivity the noise is calibrated to) whatever a node sent, and equal
    weights keep one node's sample count from scaling it.
    """
    scales = [min(1.0, privacy.clip_norm / n) if n > 0 else 1.0 for n in source.norms(block)]
    return SpoolSource(opened, data_offset, m, [1.0] * len(opened), source.device, scales)


def _add_base(aggregate: torch.Tensor, base_path: Path, data_offset: int, m: int) -> torch.Tensor:
    """base + aggregate, in place in ``aggregate``, reading the base through a memory map."""
    with base_path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        expected = data_offset + 4 * m
        if len(mm) != expected:
            raise DataLoss(f"base model file has {len(mm)} bytes; expected {expected}")
        out = aggregate.numpy()
        step = 1 << 22
        for start in range(0, m, step):
            width = min(step, m - start)
            base = np.frombuffer(mm, dtype="<f4", count=width, offset=data_offset + 4 * start)
            np.add(out[start : start + width], base, out=out[start : start + width])
            del base
    return aggregate


def _bytes_of(tensor: torch.Tensor) -> memoryview:
    array: Any = tensor.numpy()
    return memoryview(array).cast("B")


def _payload_chunks(header: bytes, model: torch.Tensor) -> Iterator[bytes]:
    yield header
    data = _bytes_of(model)
    for start in range(0, len(data), _PUBLISH_CHUNK_BYTES):
        yield bytes(data[start : start + _PUBLISH_CHUNK_BYTES])


def _by_node(receipt: Receipt) -> str:
    return receipt.node_id


def _mean_loss(used: Sequence[Receipt]) -> float:
    # Every receipt has num_samples ≥ 1 and every rule keeps at least one update.
    return sum(r.local_loss * r.num_samples for r in used) / sum(r.num_samples for r in used)
