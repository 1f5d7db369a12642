"""The node agent: register, beat, take tasks, train or evaluate, upload, report.

The same code runs a real mesh node and the simulated nodes of the demo.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import grpc
from opentelemetry import trace

from fedmesh.client.coordinator import CoordinatorClient
from fedmesh.client.learner import LocalLearner
from fedmesh.client.local_data import LocalData
from fedmesh.client.signing import NodeSigner
from fedmesh.client.transfers import ModelTransfers
from fedmesh.client.watch import AnomalyWatch
from fedmesh.errors import FedmeshError
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.proto.coordinator.v1 import coordinator_pb2 as pb
from fedmesh.telemetry import context_from_carrier

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

STREAM_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class TaskOutcome:
    """What the agent did with one task (for progress displays and tests)."""

    node_id: str
    task_id: str
    kind: str
    run_id: str
    round_no: int
    model_version: int
    local_loss: float | None
    held_out_macro_f1: float | None
    uploaded_digest: str | None
    secure_bucket: int | None = None


class NodeAgent:
    """One node: its identity, its data, and the services it talks to."""

    def __init__(
        self,
        node_id: str,
        data: LocalData,
        coordinator: CoordinatorClient,
        transfers: ModelTransfers,
        signer: NodeSigner,
        seed: int,
        on_outcome: Callable[[TaskOutcome], None] | None = None,
        watch: AnomalyWatch | None = None,
    ) -> None:
        """``signer`` holds the node's Ed25519 key: it registers its public half, signs with it."""
        self.node_id = node_id
        self._signer = signer
        self._data = data
        self._coordinator = coordinator
        self._transfers = transfers
        self._learner = LocalLearner(data, seed)
        self._on_outcome = on_outcome
        self._watch = watch
        self._done: set[str] = set()
        self._heartbeat_s = 10.0

    async def run(self) -> None:
        """Register, then beat, serve tasks and watch for anomalies until cancelled."""
        await self._register()
        background = [asyncio.create_task(self._beat())]
        if self._watch is not None:
            background.append(asyncio.create_task(self._watch.run()))
        try:
            await self._serve_tasks()
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _register(self) -> None:
        delay = 0.2
        while True:
            try:
                response = await self._coordinator.register(
                    self.node_id,
                    self._data.samples,
                    self._data.region,
                    {"detector": "graphsage"},
                    self._signer.public_key,
                )
                self._heartbeat_s = response.heartbeat_interval_s or self._heartbeat_s
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ):
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _beat(self) -> None:
        while True:
            try:
                await self._coordinator.heartbeat(self.node_id)
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "heartbeat failed",
                    extra={"fields": {"node": self.node_id, "code": exc.code().name}},
                )
            await asyncio.sleep(self._heartbeat_s)

    async def _serve_tasks(self) -> None:
        delay = 0.2
        while True:
            try:
                async for task in self._coordinator.tasks(self.node_id, STREAM_TIMEOUT_S):
                    delay = 0.2
                    if task.task_id in self._done:
                        continue
                    if task.deadline_unix_ms and time.time() * 1000 > task.deadline_unix_ms:
                        self._done.add(task.task_id)
                        continue
                    await self._handle(task)
                    self._done.add(task.task_id)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    await self._register()
                elif exc.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.CANCELLED,
                ):
                    log.warning("task stream failed", extra={"fields": {"code": exc.code().name}})
            await asyncio.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 5.0)

    async def _handle(self, task: pb.Task) -> None:
        ctx = context_from_carrier(task.trace_context.carrier)
        with _tracer.start_as_current_span(
            "node-task",
            context=ctx,
            attributes={"node": self.node_id, "run": task.run_id, "round": task.round},
        ):
            try:
                outcome = await self._perform(task)
            except FedmeshError as exc:
                log.warning(
                    "task failed", extra={"fields": {"node": self.node_id, "error": str(exc)}}
                )
                return
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "task failed",
                    extra={
                        "fields": {
                            "node": self.node_id,
                            "code": exc.code().name,
                            "details": exc.details(),
                        }
                    },
                )
                return
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    async def _perform(self, task: pb.Task) -> TaskOutcome:
        payload = await self._transfers.download(task.model)
        metrics = await asyncio.to_thread(self._learner.evaluate, payload)
        await self._coordinator.report_evaluation(
            self.node_id,
            task.run_id,
            task.round,
            task.model,
            common.EvaluationMetrics(
                loss=metrics.loss,
                macro_f1=metrics.macro_f1,
                pr_auc=metrics.pr_auc or 0.0,
                samples=metrics.samples,
                reporters=1,
            ),
        )
        if task.kind != pb.TASK_KIND_TRAIN:
            return self._outcome(task, None, metrics.macro_f1, None)
        secure = None
        if task.secure_aggregation.enabled:
            # Keys first: the key stages need no update and close while nodes start training.
            secure = await self._transfers.open_secure_round(self.node_id, task, self._signer)
        clip = task.privacy.clip_norm if task.privacy.enabled else None
        update = await asyncio.to_thread(
            self._learner.train,
            payload,
            task.training.local_epochs or 1,
            task.training.learning_rate or 1e-3,
            task.round,
            clip,
        )
        if secure is not None:
            contribution = await secure.contribute(update, task.trace_context.carrier)
            outcome = self._outcome(task, update.mean_loss, metrics.macro_f1, None)
            return replace(outcome, secure_bucket=contribution.bucket)
        digest = await self._transfers.upload(self.node_id, task, update, self._signer)
        return self._outcome(task, update.mean_loss, metrics.macro_f1, digest)

    def _outcome(
        self, task: pb.Task, loss: float | None, f1: float | None, digest: str | None
    ) -> TaskOutcome:
        return TaskOutcome(
            node_id=self.node_id,
            task_id=task.task_id,
            kind=pb.TaskKind.Name(task.kind),
            run_id=task.run_id,
            round_no=task.round,
            model_version=task.model.version,
            local_loss=loss,
            held_out_macro_f1=f1,
            uploaded_digest=digest,
        )
