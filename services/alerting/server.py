"""Wiring of the alerting service: builds the domain and the servicer, runs the background work."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import tempfile
from pathlib import Path
from typing import Protocol

import grpc
import httpx
import redis.asyncio as aioredis
from prometheus_client import start_http_server

from fedmesh.errors import InvalidArgument
from fedmesh.proto.alerting.v1 import alerting_pb2 as pb
from fedmesh.proto.alerting.v1 import alerting_pb2_grpc as pb_grpc
from fedmesh.rpc import ServiceBinding, redis_probe, serve_until_signal, start_server
from fedmesh.services.alerting.alert_store import AlertStore
from fedmesh.services.alerting.alertmanager_sink import AlertmanagerSink
from fedmesh.services.alerting.batcher import IngestBatcher
from fedmesh.services.alerting.board import AlertBoard
from fedmesh.services.alerting.clock import Clock, wall_clock_ms
from fedmesh.services.alerting.courier import Courier, SinkAlarm
from fedmesh.services.alerting.drafts import Drafter
from fedmesh.services.alerting.expiry import Expiry
from fedmesh.services.alerting.feed import AlertFeed
from fedmesh.services.alerting.intake import Intake
from fedmesh.services.alerting.log_sink import LogSink
from fedmesh.services.alerting.metrics import AlertingMetrics
from fedmesh.services.alerting.notifier import Notifier
from fedmesh.services.alerting.outbox import Outbox
from fedmesh.services.alerting.rule_file import load_rulebook
from fedmesh.services.alerting.scheduler import Scheduler
from fedmesh.services.alerting.servicer import AlertingServicer
from fedmesh.services.alerting.settings import AlertingSettings
from fedmesh.services.alerting.silences import SilenceStore
from fedmesh.services.alerting.sinks import Sink
from fedmesh.services.alerting.webhook_sink import WebhookSink
from fedmesh.store import EmbeddedRedis, connect
from fedmesh.telemetry import setup_logging, setup_tracing

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AlertingService"].full_name


def build_sinks(settings: AlertingSettings, http: httpx.AsyncClient, clock: Clock) -> list[Sink]:
    """The log sink, plus Alertmanager and the webhook where their URLs are set."""
    sinks: list[Sink] = [LogSink()]
    if settings.alertmanager_url:
        sinks.append(
            AlertmanagerSink(settings.alertmanager_url, http, settings.external_url, clock)
        )
    if settings.webhook_url:
        sinks.append(
            WebhookSink(settings.webhook_url, http, settings.external_url, settings.webhook_token)
        )
    return sinks


class BackgroundLoop(Protocol):
    """Work that runs until told to stop."""

    async def run(self) -> None:
        """Loop until :meth:`stop`."""
        ...

    def stop(self) -> None:
        """End the loop at its next turn."""
        ...


def _background(stack: contextlib.AsyncExitStack, loop: BackgroundLoop) -> None:
    task = asyncio.create_task(loop.run())

    async def stop() -> None:
        # The flag ends the loop even when the cancel is lost inside redis-py's I/O
        # (asyncio.wait_for on Python 3.11 can swallow a cancellation).
        loop.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop)


async def build(
    settings: AlertingSettings,
    redis: aioredis.Redis,
    stack: contextlib.AsyncExitStack,
    *,
    metrics: AlertingMetrics | None = None,
    clock: Clock = wall_clock_ms,
) -> list[ServiceBinding]:
    """Load the rules, wire the domain, start the scheduler, couriers and feed on ``stack``.

    Closing ``stack`` stops the background work and the HTTP client.
    """
    rulebook = load_rulebook(settings.rules_path)
    metrics = metrics or AlertingMetrics()
    http = httpx.AsyncClient(timeout=settings.http_timeout_s)
    stack.push_async_callback(http.aclose)
    sinks = build_sinks(settings, http, clock)
    alerts = AlertStore(redis)
    await alerts.index_inhibition_sources(lambda alert: rulebook.can_inhibit(alert.labels))
    silences = SilenceStore(redis)
    outbox = Outbox(redis)
    couriers: dict[str, Courier] = {}
    notifier = Notifier(
        redis,
        rulebook,
        alerts,
        silences,
        [s.name for s in sinks],
        on_queued=lambda sink: couriers[sink].wake.set(),
    )
    expiry = Expiry(alerts, silences, round(settings.retention_s * 1000))
    scheduler = Scheduler(expiry, notifier, alerts, clock, settings.tick_s)
    batcher = IngestBatcher(alerts, clock)
    intake = Intake(Drafter(rulebook), batcher, clock, metrics, on_change=scheduler.wake)
    alarm = SinkAlarm(intake)
    for sink in sinks:
        couriers[sink.name] = Courier(sink, outbox, settings.retry, clock, alarm, metrics)
    feed = AlertFeed(redis)
    await feed.start()
    stack.push_async_callback(feed.stop)
    _background(stack, scheduler)
    for courier in couriers.values():
        _background(stack, courier)
    board = AlertBoard(rulebook, alerts, silences, outbox, sinks, settings.retry, clock, notifier)
    servicer = AlertingServicer(
        intake, board, alerts, silences, feed, clock, tls_required=settings.common.tls is not None
    )
    log.info(
        "alerting rules loaded",
        extra={"fields": {"rules": rulebook.source, "sinks": [s.target for s in sinks]}},
    )

    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_AlertingServiceServicer_to_server(servicer, server)

    return [ServiceBinding(SERVICE_NAME, register)]


async def serve(settings: AlertingSettings) -> None:
    """Run the alerting service until SIGTERM/SIGINT."""
    setup_tracing("alerting")
    setup_logging("alerting")
    async with contextlib.AsyncExitStack() as stack:
        url = settings.common.redis_url
        if url is None:
            data = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="fedmesh-alerting-"))
            )
            embedded = await asyncio.to_thread(EmbeddedRedis(data / "redis").start)
            stack.push_async_callback(asyncio.to_thread, embedded.stop)
            url = embedded.url
            log.warning(
                "no FEDMESH_REDIS_URL; alert state lives in a temporary embedded Redis",
                extra={"fields": {"url": url}},
            )
        redis = connect(url)
        stack.push_async_callback(redis.aclose)
        metrics = AlertingMetrics()
        if settings.common.metrics_port:
            start_http_server(settings.common.metrics_port, registry=metrics.registry)
        bindings = await build(settings, redis, stack, metrics=metrics)
        running = await start_server(
            bindings,
            address=settings.common.listen,
            tls=settings.common.tls,
            readiness=redis_probe(redis),
        )
        log.info("alerting listening", extra={"fields": {"port": running.port}})
        if settings.common.listen.endswith(":0"):
            print(f"LISTENING {running.port}", flush=True)
        await serve_until_signal(running)


def main() -> None:
    """Entry point of ``python -m fedmesh.services.alerting`` and ``fedmesh serve alerting``.

    A malformed setting or rule file stops the start with its reason and exit status 2.
    """
    try:
        asyncio.run(serve(AlertingSettings.from_env()))
    except InvalidArgument as exc:
        print(f"alerting: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
