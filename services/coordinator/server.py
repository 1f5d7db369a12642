"""Coordinator wiring: builds the servicer and the control loop from their dependencies."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

import grpc
import redis.asyncio as aioredis
from prometheus_client import start_http_server

from fedmesh.proto.coordinator.v1 import coordinator_pb2 as pb
from fedmesh.proto.coordinator.v1 import coordinator_pb2_grpc as pb_grpc
from fedmesh.rpc import (
    ServiceBinding,
    all_of,
    open_channel,
    peer_probe,
    redis_probe,
    start_server,
)
from fedmesh.services.coordinator.control import RunControl
from fedmesh.services.coordinator.driver import DriverSettings, RoundDriver, now_ms
from fedmesh.services.coordinator.evaluations import EvaluationBoard
from fedmesh.services.coordinator.leadership import Replica
from fedmesh.services.coordinator.lease import LeaderLease
from fedmesh.services.coordinator.liveness import LivenessWatch
from fedmesh.services.coordinator.metrics import CoordinatorMetrics
from fedmesh.services.coordinator.nodes import NodeRegistry
from fedmesh.services.coordinator.peers import GrpcAggregation, GrpcModelCatalog
from fedmesh.services.coordinator.ports import Events
from fedmesh.services.coordinator.privacy_budget import PrivacyBudgets
from fedmesh.services.coordinator.runs import RunStore
from fedmesh.services.coordinator.servicer import CoordinatorServicer
from fedmesh.services.coordinator.settings import CoordinatorSettings
from fedmesh.services.coordinator.task_feed import TaskFeed
from fedmesh.services.coordinator.tasks import TaskBoard
from fedmesh.stopping import stop
from fedmesh.store import RoundStore, connect
from fedmesh.telemetry import setup_logging, setup_tracing

log = logging.getLogger(__name__)

STOP_GRACE_S = 5.0
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CoordinatorService"].full_name


@dataclass(frozen=True)
class Coordinator:
    """A wired coordinator: its gRPC binding, its replica loop, its task feed, its metrics."""

    binding: ServiceBinding
    replica: Replica
    feed: TaskFeed
    metrics: CoordinatorMetrics

    async def run(self) -> None:
        """The replica loop and the task feed, until closed or cancelled.

        On the way out both are closed and awaited to their end, so the lease is
        released and every task stream has ended when this returns.
        """
        loops = [
            asyncio.create_task(self.replica.run(), name="replica"),
            asyncio.create_task(self.feed.run(), name="task-feed"),
        ]
        try:
            await asyncio.gather(*loops)
        finally:
            self.close()
            await asyncio.wait(loops)

    def close(self) -> None:
        """Ask the loops to end (``run`` returns once they have)."""
        self.replica.close()
        self.feed.close()


def build(
    settings: CoordinatorSettings,
    redis: aioredis.Redis,
    aggregator: grpc.aio.Channel,
    registry: grpc.aio.Channel,
    events: Events,
    metrics: CoordinatorMetrics | None = None,
) -> Coordinator:
    """Construct the coordinator's domain objects and servicer."""
    metrics = metrics if metrics is not None else CoordinatorMetrics()
    stale_after_ms = int(settings.stale_after_s * 1000)
    runs, rounds, nodes = RunStore(redis), RoundStore(redis), NodeRegistry(redis)
    tasks, evaluations = TaskBoard(redis), EvaluationBoard(redis)
    catalog = GrpcModelCatalog(registry)
    budgets = PrivacyBudgets(redis)
    driver = RoundDriver(
        runs,
        rounds,
        nodes,
        tasks,
        GrpcAggregation(aggregator, timeout_s=600.0),
        events,
        DriverSettings(settings.common.aggregator_address, stale_after_ms, settings.tick_s),
        metrics,
        budgets,
    )
    replica = Replica(
        LeaderLease(redis, settings.replica_id, settings.lease_ttl_ms),
        driver,
        LivenessWatch(redis, nodes, events, stale_after_ms),
        settings.tick_s,
        metrics,
    )
    feed = TaskFeed(tasks, settings.task_poll_s)
    control = RunControl(runs, rounds, nodes, evaluations, catalog, stale_after_ms, now_ms)
    servicer = CoordinatorServicer(
        control,
        runs,
        rounds,
        nodes,
        feed,
        evaluations,
        replica,
        settings.heartbeat_interval_s,
        stale_after_ms,
        now_ms,
        budgets=budgets,
        tls_required=settings.common.tls is not None,
    )
    binding = ServiceBinding(
        SERVICE_NAME,
        lambda server: pb_grpc.add_CoordinatorServiceServicer_to_server(servicer, server),
    )
    return Coordinator(binding, replica, feed, metrics)


async def serve(settings: CoordinatorSettings) -> None:
    """Run the coordinator until SIGTERM."""
    from fedmesh.client.alerting import EventEmitter

    setup_logging("coordinator")
    setup_tracing("coordinator")
    redis = connect(settings.common.redis_url or "redis://127.0.0.1:6379/0")
    tls = settings.common.tls
    aggregator = open_channel(settings.common.aggregator_address, tls=tls)
    registry = open_channel(settings.common.registry_address, tls=tls)
    alerting = open_channel(settings.common.alerting_address, tls=tls)
    coordinator = build(
        settings, redis, aggregator, registry, EventEmitter(alerting, source="coordinator")
    )
    running = await start_server(
        [coordinator.binding],
        address=settings.common.listen,
        tls=tls,
        readiness=all_of([redis_probe(redis), peer_probe(registry)]),
    )
    if settings.common.metrics_port:
        start_http_server(settings.common.metrics_port, registry=coordinator.metrics.registry)
    print(f"LISTENING {running.port}", flush=True)
    loops = asyncio.create_task(coordinator.run())
    signalled = _stop_on_signal()
    waiter = asyncio.create_task(running.wait_for_termination())
    stopper = asyncio.create_task(signalled.wait())
    try:
        await asyncio.wait({waiter, stopper, loops}, return_when=asyncio.FIRST_COMPLETED)
        if signalled.is_set():
            log.info("signal received; handing over and stopping")
    finally:
        # The loops stop before the server: the lease is released, so a standby leads at
        # once, and the task streams end, so nodes reconnect to a live replica instead of
        # waiting out the grace period.
        coordinator.close()
        await stop(loops)
        await running.stop(STOP_GRACE_S)
        for task in (waiter, stopper):
            task.cancel()
        for channel in (aggregator, registry, alerting):
            await channel.close()
        await redis.aclose()


def _stop_on_signal() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def main() -> None:
    """Entry point of ``fedmesh serve coordinator``."""
    asyncio.run(serve(CoordinatorSettings.from_env()))
