"""What every chaos test asserts after its run, and the waits it needs on the way."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc

from fedmesh.cli.stack import LocalStack
from fedmesh.client.coordinator import CoordinatorClient
from fedmesh.client.registry import RegistryClient
from fedmesh.proto.coordinator.v1 import coordinator_pb2 as pb
from fedmesh.proto.registry.v1 import registry_pb2 as reg_pb
from fedmesh.rpc import open_channel
from fedmesh.store import RoundStore, connect

from .fleet import Upload, expected_digest

T = TypeVar("T")


async def until(probe: Callable[[], Awaitable[T | None]], what: str, timeout_s: float = 60) -> T:
    """Poll ``probe`` until it returns something other than None; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = await probe()
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            value = None
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached in {timeout_s} s")
        await asyncio.sleep(0.1)


async def leader(stack: LocalStack, timeout_s: float = 60) -> tuple[str, int]:
    """The replica that leads now and its fencing token (asked of each live replica)."""

    async def probe() -> tuple[str, int] | None:
        found = []
        for name in stack.coordinator_names:
            if not stack.services[name].running:
                continue
            async with open_channel(stack.services[name].address) as channel:
                try:
                    status = await CoordinatorClient(channel, timeout_s=2).status()
                except grpc.aio.AioRpcError:
                    continue
            if status.leader:
                found.append((name, int(status.fencing_token)))
        return found[0] if len(found) == 1 else None

    return await until(probe, "exactly one coordinator replica leads", timeout_s)


async def round_info(coordinator: CoordinatorClient, run_id: str, round_no: int) -> pb.RoundInfo:
    """One round as the coordinator reports it."""
    state = await coordinator.get_run(run_id)
    for info in state.rounds:
        if info.round == round_no:
            return info
    raise LookupError(f"run {run_id} has no round {round_no} yet")


async def wait_round(
    coordinator: CoordinatorClient,
    run_id: str,
    round_no: int,
    accept: Callable[[pb.RoundInfo], bool],
    what: str,
    timeout_s: float = 60,
) -> pb.RoundInfo:
    """Until round ``round_no`` of the run satisfies ``accept``."""

    async def probe() -> pb.RoundInfo | None:
        state = await coordinator.get_run(run_id)
        for info in state.rounds:
            if info.round == round_no and accept(info):
                return info
        return None

    return await until(probe, f"round {round_no}: {what}", timeout_s)


async def finished(
    coordinator: CoordinatorClient, run_id: str, timeout_s: float = 120
) -> pb.GetRunResponse:
    """The run once it is no longer RUNNING."""

    async def probe() -> pb.GetRunResponse | None:
        state = await coordinator.get_run(run_id)
        return None if state.run.status == pb.RUN_STATUS_RUNNING else state

    return await until(probe, f"run {run_id} finishes", timeout_s)


async def all_versions(registry: RegistryClient, name: str) -> list[reg_pb.ModelVersion]:
    """Every version of ``name``, oldest first."""
    versions: list[reg_pb.ModelVersion] = []
    token = ""
    while True:
        page = await registry.list_versions(name, page_size=100, page_token=token)
        versions.extend(page.versions)
        token = page.next_page_token
        if not token:
            return sorted(versions, key=lambda v: v.ref.version)


async def assert_run_integrity(
    stack: LocalStack,
    state: pb.GetRunResponse,
    model_name: str,
    initial_version: int,
    uploads: Sequence[Upload],
) -> list[pb.RoundInfo]:
    """The run finished; every round closed with a reason if it failed; versions have no gap
    and no duplicate; every acknowledged update is counted once, and nothing else is.

    Returns the completed rounds.
    """
    run_id = state.run.run_id
    assert state.run.status == pb.RUN_STATUS_COMPLETED, state.run
    assert [r.round for r in state.rounds] == list(range(1, state.run.spec.rounds + 1))
    for info in state.rounds:
        assert info.phase in (pb.ROUND_PHASE_COMPLETED, pb.ROUND_PHASE_FAILED), info
        assert info.phase == pb.ROUND_PHASE_COMPLETED or info.failure_reason, info
    completed = [r for r in state.rounds if r.phase == pb.ROUND_PHASE_COMPLETED]
    made = [r.result_model.version for r in completed]
    assert made == list(range(initial_version + 1, initial_version + 1 + len(completed)))
    assert state.run.rounds_completed == len(completed)
    assert state.run.rounds_failed == len(state.rounds) - len(completed)
    assert state.run.model.version == initial_version + len(completed)

    async with open_channel(stack.services["registry"].address) as channel:
        registry = RegistryClient(channel)
        versions = await all_versions(registry, model_name)
        chain = await registry.verify_chain(model_name)
    assert [v.ref.version for v in versions] == list(range(initial_version, made[-1] + 1))
    assert chain.versions_checked == len(versions)
    by_version = {v.ref.version: v for v in versions}

    redis = connect(stack.redis_url)
    try:
        rounds = RoundStore(redis)
        parent = initial_version
        for info in completed:
            version = by_version[info.result_model.version]
            assert (version.run_id, version.round) == (run_id, info.round)
            assert version.parent_version == info.base_model.version == parent
            parent = version.ref.version
            record = await rounds.get(run_id, info.round)
            receipts = {node: receipt.digest for node, receipt in record.receipts.items()}
            acknowledged = {
                u.node_id: u.digest
                for u in uploads
                if (u.run_id, u.round_no) == (run_id, info.round)
            }
            assert acknowledged == receipts, "an acknowledged update is missing or one is extra"
            assert sorted(version.participant_update_digests) == sorted(receipts.values())
            assert len(set(version.participant_update_digests)) == len(receipts)
            assert all(d == expected_digest(n, info.round) for n, d in receipts.items())
            assert set(receipts) <= set(info.participants)
            assert sorted(info.received) == sorted(receipts)
    finally:
        await redis.aclose()
    return completed
