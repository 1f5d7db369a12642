"""Light nodes for chaos tests: the real node RPCs, a tiny model, a gate the test controls.

Each node registers, beats, holds a StreamTasks stream through the coordinator
replicas' shared target (so it fails over like a node behind a Kubernetes
Service), downloads the round's model from the registry (digest checked),
and uploads a delta that depends only on (node, round) — so every upload's
digest is known in advance. A silent node registers and beats but ignores its
tasks. The gate holds uploads of chosen rounds until the test lets them through.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType

import grpc
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedmesh.cli.stack import LocalStack
from fedmesh.client.aggregator import AggregatorClient
from fedmesh.client.coordinator import CoordinatorClient
from fedmesh.client.registry import RegistryClient
from fedmesh.client.signing import NodeSigner
from fedmesh.proto.coordinator.v1 import coordinator_pb2 as pb
from fedmesh.rpc import open_channel
from fedmesh.stopping import stop
from fedmesh.tensors import decode, digest_tensors

log = logging.getLogger(__name__)

RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def tiny_model(seed: int) -> dict[str, torch.Tensor]:
    """The chaos tests' model: 528 float32 values in two tensors."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "layer.weight": torch.randn(32, 16, generator=generator),
        "layer.bias": torch.randn(16, generator=generator),
    }


def delta_of(node_id: str, round_no: int, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The update a node sends in a round: a function of (node, round) only."""
    seed = int.from_bytes(hashlib.sha256(f"{node_id}/{round_no}".encode()).digest()[:8], "big")
    generator = torch.Generator().manual_seed(seed)
    return {
        name: torch.randn(like[name].shape, generator=generator) * 0.01 for name in sorted(like)
    }


def expected_digest(node_id: str, round_no: int) -> str:
    """The digest of the update ``node_id`` sends in ``round_no`` (it depends on shapes only)."""
    return digest_tensors(delta_of(node_id, round_no, tiny_model(0)))


@dataclass(frozen=True)
class Upload:
    """An update the aggregator acknowledged."""

    node_id: str
    run_id: str
    round_no: int
    digest: str
    duplicate: bool


class Gate:
    """Holds the uploads of chosen rounds until the test lets nodes through."""

    def __init__(self) -> None:
        self._held: set[int] = set()
        self._tickets: dict[int, int] = {}
        self._changed = asyncio.Condition()
        self.waiting: dict[int, set[str]] = {}

    def hold(self, round_no: int) -> None:
        """Hold every upload of ``round_no`` (call before the round opens)."""
        self._held.add(round_no)

    async def let_through(self, round_no: int, count: int) -> None:
        """Let ``count`` of the held nodes of ``round_no`` upload."""
        async with self._changed:
            self._tickets[round_no] = self._tickets.get(round_no, 0) + count
            self._changed.notify_all()

    async def open(self, round_no: int) -> None:
        """Let every node of ``round_no`` upload, now and later."""
        async with self._changed:
            self._held.discard(round_no)
            self._changed.notify_all()

    async def wait(self, node_id: str, round_no: int) -> None:
        """Block while ``round_no`` is held and no ticket is left."""
        async with self._changed:
            self.waiting.setdefault(round_no, set()).add(node_id)
            await self._changed.wait_for(
                lambda: round_no not in self._held or self._tickets.get(round_no, 0) > 0
            )
            if round_no in self._held:
                self._tickets[round_no] -= 1
            self.waiting[round_no].discard(node_id)


@dataclass
class TinyNode:
    """One light node; ``silent`` nodes take tasks and never answer them."""

    node_id: str
    coordinator: CoordinatorClient
    registry: RegistryClient
    aggregator: AggregatorClient
    gate: Gate
    uploads: list[Upload]
    signer: NodeSigner
    silent: bool = False
    heartbeat_s: float = 1.0
    ignored: list[str] = field(default_factory=list)
    _done: set[str] = field(default_factory=set)

    async def run(self) -> None:
        """Register, then beat and serve tasks until cancelled."""
        await self._register()
        beats = asyncio.create_task(self._beat())
        try:
            await self._serve()
        finally:
            await stop(beats)

    async def _register(self) -> None:
        while True:
            try:
                await self.coordinator.register(
                    self.node_id, 100, "chaos", {"model": "tiny"}, self.signer.public_key
                )
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE:
                    raise
                await asyncio.sleep(0.2)

    async def _beat(self) -> None:
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self.coordinator.heartbeat(self.node_id)
            await asyncio.sleep(self.heartbeat_s)

    async def _serve(self) -> None:
        while True:
            try:
                async for task in self.coordinator.tasks(self.node_id, stream_timeout_s=60):
                    if task.task_id in self._done:
                        continue
                    self._done.add(task.task_id)
                    if self.silent or task.kind != pb.TASK_KIND_TRAIN:
                        self.ignored.append(task.task_id)
                        continue
                    await self._train(task)
            except grpc.aio.AioRpcError as exc:
                log.info("task stream ended", extra={"fields": {"code": exc.code().name}})
            await asyncio.sleep(0.1 + 0.2 * random.random())

    async def _train(self, task: pb.Task) -> None:
        payload = await self.registry.download(task.model.name, version=task.model.version)
        delta = delta_of(self.node_id, task.round, decode(payload))
        await self.gate.wait(self.node_id, task.round)
        try:
            response = await self.aggregator.submit_tensors(
                run_id=task.run_id,
                round_no=task.round,
                node_id=self.node_id,
                base_model=task.model,
                tensors=delta,
                num_samples=100,
                local_loss=0.5,
                deadline_s=30,
                signer=self.signer,
            )
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "upload refused",
                extra={"fields": {"node": self.node_id, "code": exc.code().name}},
            )
            return
        self.uploads.append(
            Upload(self.node_id, task.run_id, task.round, response.digest, response.duplicate)
        )


def seeded_signer(node_id: str) -> NodeSigner:
    """The same key for the same node id, so a node id keeps its key across fleets on a stack."""
    seed = hashlib.sha256(b"fedmesh/chaos/" + node_id.encode()).digest()
    return NodeSigner(Ed25519PrivateKey.from_private_bytes(seed))


class Fleet:
    """Light nodes in this process, with their channels; an async context manager."""

    def __init__(self, stack: LocalStack, node_ids: Iterable[str], silent: Iterable[str] = ()):
        self.gate = Gate()
        self.uploads: list[Upload] = []
        self._stack = stack
        self._node_ids = list(node_ids)
        self._silent = set(silent)
        self._channels: list[grpc.aio.Channel] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.nodes: list[TinyNode] = []

    async def __aenter__(self) -> Fleet:
        registry = self._channel(self._stack.services["registry"].address)
        aggregator = self._channel(self._stack.services["aggregator"].address)
        for node_id in self._node_ids:
            node = TinyNode(
                node_id,
                CoordinatorClient(self._channel(self._stack.coordinator_target)),
                RegistryClient(registry),
                AggregatorClient(aggregator, initial_backoff=0.1),
                self.gate,
                self.uploads,
                seeded_signer(node_id),
                silent=node_id in self._silent,
            )
            self.nodes.append(node)
            self._tasks.append(asyncio.create_task(node.run(), name=node_id))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.gather(*(stop(task) for task in self._tasks))
        for channel in self._channels:
            await channel.close()

    def _channel(self, target: str) -> grpc.aio.Channel:
        channel = open_channel(target, default_timeout=10)
        self._channels.append(channel)
        return channel

    async def wait_registered(self, coordinator: CoordinatorClient, timeout_s: float = 60) -> None:
        """Until every node of the fleet is ONLINE at the coordinator."""
        deadline = time.monotonic() + timeout_s
        wanted = set(self._node_ids)
        while True:
            online = {
                n.node_id for n in await coordinator.list_nodes() if n.state == pb.NODE_STATE_ONLINE
            }
            if wanted <= online:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes not online after {timeout_s} s: {wanted - online}")
            await asyncio.sleep(0.2)
