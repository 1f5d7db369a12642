"""Restart reconciliation: receipts in Redis and files in the spool must agree.

Run before the server accepts calls. A receipt whose update is missing or does
not hash to its digest is dropped, so the node's retry is accepted again; a
spool file that backs no receipt of a round still to aggregate is deleted, and
so are uploads that were cut off mid-stream. The receipts of a secure round
are backed by its stored bucket sums instead; sums of rounds no longer waiting
for aggregation, or stored only in part, are deleted.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from fedmesh.errors import NotFound
from fedmesh.privacy.secagg.round_spec import ROUND_FIELD
from fedmesh.services.aggregator.results import RoundResults
from fedmesh.services.aggregator.secure_sums import SecureSumStore
from fedmesh.services.aggregator.spool import SpoolKey, UpdateSpool
from fedmesh.store import Phase, RoundStore

log = logging.getLogger(__name__)

# Every round not yet COMPLETED or FAILED sits in the deadline index.
_ALL_DEADLINES_MS = 2**62
_MAX_OPEN_ROUNDS = 1_000_000
_AWAITING_AGGREGATION = frozenset({Phase.COLLECTING, Phase.AGGREGATING})


@dataclass(frozen=True)
class DroppedReceipt:
    """A receipt removed because its spooled update was lost or damaged."""

    key: SpoolKey
    reason: str


@dataclass(frozen=True)
class ReconcileReport:
    """What reconciliation kept, dropped and deleted."""

    kept: tuple[SpoolKey, ...]
    dropped: tuple[DroppedReceipt, ...]
    removed_files: int
    removed_partials: int
    removed_secure_rounds: int


async def reconcile(
    spool: UpdateSpool, rounds: RoundStore, results: RoundResults, secure_sums: SecureSumStore
) -> ReconcileReport:
    """Make receipts, spool and secure sums agree, as described in the module docstring."""
    removed_partials = await asyncio.to_thread(spool.clear_incoming)
    for stray in await asyncio.to_thread(spool.rescan):
        log.warning(
            "file in the spool is not an update; left alone",
            extra={"fields": {"path": str(stray)}},
        )
    kept: list[SpoolKey] = []
    dropped: list[DroppedReceipt] = []
    secure_kept: set[tuple[str, int]] = set()
    for run_id, round_no in await rounds.due(_ALL_DEADLINES_MS, limit=_MAX_OPEN_ROUNDS):
        try:
            record = await rounds.get(run_id, round_no)
        except NotFound:
            continue
        if record.phase not in _AWAITING_AGGREGATION:
            continue
        if await results.get(run_id, round_no) is not None:
            continue
        if ROUND_FIELD in record.fields:
            if await asyncio.to_thread(secure_sums.load, run_id, round_no) is not None:
                secure_kept.add((run_id, round_no))
            continue
        for node_id, receipt in sorted(record.receipts.items()):
            key = SpoolKey(run_id, round_no, node_id, receipt.digest)
            if not spool.contains(key):
                reason = "spooled update missing"
            elif not await spool.verify(key):
                reason = "spooled update does not hash to its digest"
            else:
                kept.append(key)
                continue
            await rounds.drop_receipt(run_id, round_no, node_id)
            dropped.append(DroppedReceipt(key, reason))
            log.warning(
                "receipt dropped; the node's retry will be accepted",
                extra={
                    "fields": {
                        "run_id": run_id,
                        "round": round_no,
                        "node_id": node_id,
                        "digest": receipt.digest,
                        "reason": reason,
                    }
                },
            )
    keep = set(kept)
    removed = 0
    for key in spool.spooled_keys():
        if key not in keep:
            await spool.remove(key)
            removed += 1
    await asyncio.to_thread(spool.prune_empty_dirs)
    removed_secure = 0
    for stored in await asyncio.to_thread(secure_sums.rounds):
        if stored not in secure_kept:
            await asyncio.to_thread(secure_sums.remove, *stored)
            removed_secure += 1
    return ReconcileReport(tuple(kept), tuple(dropped), removed, removed_partials, removed_secure)
