"""Restart reconciliation over a real Redis and a real spool directory."""

from collections.abc import AsyncIterator, Callable

import redis.asyncio as aioredis
import torch

from fedmesh.services.aggregator.reconcile import reconcile
from fedmesh.services.aggregator.results import RoundResult, RoundResults
from fedmesh.services.aggregator.secure_sums import SecureSumStore
from fedmesh.services.aggregator.spool import SpoolKey, UpdateSpool
from fedmesh.services.aggregator.submission import UpdateIntake
from fedmesh.services.aggregator.update import ModelRef, UpdateHeader
from fedmesh.store import Phase, Receipt, RoundStore
from fedmesh.tensors import encode

Tensors = dict[str, torch.Tensor]


async def accept(
    intake: UpdateIntake,
    delta: Callable[[int], Tensors],
    header_for: Callable[..., UpdateHeader],
    chunks_of: Callable[..., AsyncIterator[bytes]],
    node: str,
    seed: int,
) -> SpoolKey:
    tensors = delta(seed)
    header = header_for(tensors, node=node)
    await intake.submit(header, chunks_of(encode(tensors)))
    return SpoolKey(header.run_id, header.round_no, node, header.digest)


async def test_receipts_whose_data_is_lost_or_damaged_are_dropped_and_retries_accepted(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    redis_client: aioredis.Redis,
    delta: Callable[[int], Tensors],
    header_for: Callable[..., UpdateHeader],
    chunks_of: Callable[..., AsyncIterator[bytes]],
) -> None:
    intact = await accept(intake, delta, header_for, chunks_of, "n1", 1)
    lost = await accept(intake, delta, header_for, chunks_of, "n2", 2)
    damaged = await accept(intake, delta, header_for, chunks_of, "n3", 3)
    spool.path_of(lost).unlink()
    spool.path_of(damaged).write_bytes(b"\0" * spool.size_of(damaged))

    report = await reconcile(
        spool, rounds, RoundResults(redis_client), SecureSumStore(spool.root / "secure")
    )

    assert report.kept == (intact,)
    assert [(d.key, d.reason) for d in report.dropped] == [
        (lost, "spooled update missing"),
        (damaged, "spooled update does not hash to its digest"),
    ]
    assert set((await rounds.get("run-1", 3)).receipts) == {"n1"}
    assert spool.spooled_keys() == [intact]
    assert not spool.path_of(damaged).exists()
    retried = delta(2)
    outcome = await intake.submit(header_for(retried, node="n2"), chunks_of(encode(retried)))
    assert outcome.duplicate is False


async def test_files_without_a_receipt_and_partial_uploads_are_removed(
    rounds: RoundStore, spool: UpdateSpool, redis_client: aioredis.Redis
) -> None:
    orphan = SpoolKey("run-1", 3, "n1", "b" * 64)
    writer = spool.begin(4)
    writer.write(b"data")
    await spool.commit(writer, orphan)
    (spool.root / "incoming" / "cut.part").write_bytes(b"half")

    report = await reconcile(
        spool, rounds, RoundResults(redis_client), SecureSumStore(spool.root / "secure")
    )

    assert (report.kept, report.dropped, report.removed_files, report.removed_partials) == (
        (),
        (),
        1,
        1,
    )
    assert list(spool.root.rglob("*.update")) == []
    assert list((spool.root / "rounds").iterdir()) == []


async def test_updates_of_finished_or_aggregated_rounds_are_removed_but_receipts_kept(
    intake: UpdateIntake,
    rounds: RoundStore,
    spool: UpdateSpool,
    redis_client: aioredis.Redis,
    base_ref: ModelRef,
    delta: Callable[[int], Tensors],
    header_for: Callable[..., UpdateHeader],
    chunks_of: Callable[..., AsyncIterator[bytes]],
) -> None:
    finished = await accept(intake, delta, header_for, chunks_of, "n1", 1)
    await rounds.transition("run-1", 3, Phase.COLLECTING, Phase.AGGREGATING)
    await rounds.transition("run-1", 3, Phase.AGGREGATING, Phase.COMPLETED)
    await rounds.create("run-1", 4, ["n1"], 10**13, 1)
    await rounds.transition("run-1", 4, Phase.PENDING, Phase.COLLECTING)
    await rounds.record_receipt("run-1", 4, Receipt("n1", "c" * 64, 1, 4, 0.1, 1))
    await rounds.transition("run-1", 4, Phase.COLLECTING, Phase.AGGREGATING)
    aggregated = SpoolKey("run-1", 4, "n1", "c" * 64)
    writer = spool.begin(4)
    writer.write(b"data")
    await spool.commit(writer, aggregated)
    results = RoundResults(redis_client)
    await results.put("run-1", 4, RoundResult(base_ref, (), 1, 0.1, 0.0, 0.5))

    report = await reconcile(spool, rounds, results, SecureSumStore(spool.root / "secure"))

    assert report.removed_files == 2
    assert spool.spooled_keys() == []
    assert (await rounds.get("run-1", 3)).receipts["n1"].digest == finished.digest
    assert (await rounds.get("run-1", 4)).receipts["n1"].digest == "c" * 64
