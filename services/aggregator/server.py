"""Wiring of the aggregator: reconcile the spool, build the servicer, serve it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import start_http_server
from redis.exceptions import RedisError

from fedmesh.client.registry import RegistryClient
from fedmesh.errors import InvalidArgument
from fedmesh.rpc import ServiceBinding, open_channel, serve_until_signal, start_server
from fedmesh.services.aggregator.base_model import BaseManifests
from fedmesh.services.aggregator.central_privacy import CentralPrivacy
from fedmesh.services.aggregator.gaussian_privacy import GaussianCentralPrivacy
from fedmesh.services.aggregator.metrics import AggregatorMetrics
from fedmesh.services.aggregator.nonces import UsedNonces
from fedmesh.services.aggregator.reconcile import reconcile
from fedmesh.services.aggregator.registry_link import RegistryModels
from fedmesh.services.aggregator.results import RoundResults
from fedmesh.services.aggregator.round_aggregation import RoundAggregator
from fedmesh.services.aggregator.secure_rounds import SecureRounds
from fedmesh.services.aggregator.secure_servicer import SecureAggregationEdge
from fedmesh.services.aggregator.secure_sums import SecureSumStore
from fedmesh.services.aggregator.servicer import SERVICE_NAME, AggregatorServicer, add_to_server
from fedmesh.services.aggregator.settings import AggregatorSettings
from fedmesh.services.aggregator.spool import UpdateSpool
from fedmesh.services.aggregator.submission import UpdateIntake
from fedmesh.store import RoundStore, connect
from fedmesh.telemetry import setup_logging, setup_tracing

log = logging.getLogger(__name__)
_PROBE_TIMEOUT_S = 0.9


async def build(
    settings: AggregatorSettings,
    redis: aioredis.Redis,
    registry: RegistryClient,
    metrics: AggregatorMetrics | None = None,
    privacy: CentralPrivacy | None = None,
) -> list[ServiceBinding]:
    """Open and reconcile the spool, then build the servicer from its dependencies.

    ``privacy`` is the central DP step; without one, rounds that ask for DP are refused.
    """
    spool = await asyncio.to_thread(
        UpdateSpool, settings.spool_dir, settings.memory_threshold_bytes
    )
    rounds = RoundStore(redis)
    results = RoundResults(redis)
    secure_sums = await asyncio.to_thread(SecureSumStore, spool.root / "secure")
    report = await reconcile(spool, rounds, results, secure_sums)
    log.info(
        "spool reconciled",
        extra={
            "fields": {
                "kept": len(report.kept),
                "dropped_receipts": len(report.dropped),
                "removed_files": report.removed_files,
                "removed_partials": report.removed_partials,
                "removed_secure_rounds": report.removed_secure_rounds,
            }
        },
    )
    models = RegistryModels(registry)
    manifests = BaseManifests(models)
    metrics = metrics if metrics is not None else AggregatorMetrics()
    tls_required = settings.common.tls is not None
    servicer = AggregatorServicer(
        intake=UpdateIntake(
            rounds, spool, manifests, metrics, settings.max_update_bytes, UsedNonces(redis)
        ),
        aggregator=RoundAggregator(
            redis=redis,
            rounds=rounds,
            results=results,
            spool=spool,
            manifests=manifests,
            registry=models,
            metrics=metrics,
            device=settings.device,
            secure_sums=secure_sums,
            block_coordinates=settings.block_coordinates,
            privacy=privacy,
        ),
        spool=spool,
        metrics=metrics,
        secure=SecureAggregationEdge(
            SecureRounds(rounds, manifests, secure_sums, metrics), tls_required=tls_required
        ),
        tls_required=tls_required,
    )

    def register(server: grpc.aio.Server) -> None:
        add_to_server(servicer, server)

    return [ServiceBinding(SERVICE_NAME, register)]


def readiness(
    redis: aioredis.Redis, registry_channel: grpc.aio.Channel
) -> Callable[[], Awaitable[bool]]:
    """Ready while Redis answers PING and the registry's health says SERVING."""
    health = health_pb2_grpc.HealthStub(registry_channel)

    async def ready() -> bool:
        try:
            if not await redis.ping():
                return False
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=_PROBE_TIMEOUT_S)
        except (RedisError, grpc.aio.AioRpcError):
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    return ready


async def serve(settings: AggregatorSettings) -> None:
    """Run the aggregator until SIGTERM/SIGINT."""
    setup_tracing("aggregator")
    setup_logging("aggregator")
    if settings.common.redis_url is None:
        raise InvalidArgument(
            "FEDMESH_REDIS_URL is not set; the aggregator reads the rounds the coordinator "
            "writes, so it needs the same Redis"
        )
    redis = connect(settings.common.redis_url)
    registry_channel = open_channel(settings.common.registry_address, tls=settings.common.tls)
    metrics = AggregatorMetrics()
    try:
        running = await start_server(
            await build(
                settings,
                redis,
                RegistryClient(registry_channel),
                metrics,
                privacy=GaussianCentralPrivacy(),
            ),
            address=settings.common.listen,
            tls=settings.common.tls,
            readiness=readiness(redis, registry_channel),
        )
        if settings.common.metrics_port:
            start_http_server(settings.common.metrics_port, registry=metrics.registry)
        log.info("aggregator listening", extra={"fields": {"port": running.port}})
        if settings.common.listen.endswith(":0"):
            print(f"LISTENING {running.port}", flush=True)
        await serve_until_signal(running)
    finally:
        await registry_channel.close()
        await redis.aclose()


def main() -> None:
    """Entry point of ``python -m fedmesh.services.aggregator`` and ``fedmesh serve aggregator``."""
    asyncio.run(serve(AggregatorSettings.from_env()))
