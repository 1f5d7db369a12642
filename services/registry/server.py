"""Wiring of the registry service: builds the servicer from its dependencies and serves it."""

from __future__ import annotations

import asyncio
import logging
import os
import time

import grpc
import redis.asyncio as aioredis
from prometheus_client import start_http_server

from fedmesh.client.alerting import EventEmitter
from fedmesh.proto.registry.v1 import registry_pb2_grpc as pb_grpc
from fedmesh.rpc import ServiceBinding, open_channel, serve_until_signal, start_server
from fedmesh.rpc.server import Readiness
from fedmesh.services.registry.alarm import AlertingAlarm
from fedmesh.services.registry.aliases import AliasBook
from fedmesh.services.registry.blobs import BlobLocks, BlobStore
from fedmesh.services.registry.catalog import Catalog
from fedmesh.services.registry.chain import ChainVerifier, RecordCheck
from fedmesh.services.registry.downloads import BlobStreamer
from fedmesh.services.registry.metrics import RegistryMetrics
from fedmesh.services.registry.orphans import collect_orphans
from fedmesh.services.registry.promotion import PromotionGate, Promotions
from fedmesh.services.registry.publishing import Publisher
from fedmesh.services.registry.retention import Retention
from fedmesh.services.registry.servicer import SERVICE_NAME, RegistryServicer
from fedmesh.services.registry.settings import RegistrySettings
from fedmesh.services.registry.signing import RecordSigner
from fedmesh.services.registry.versions import VersionStore
from fedmesh.store import EmbeddedRedis, connect
from fedmesh.telemetry import setup_logging, setup_tracing

log = logging.getLogger(__name__)

# Exit status of the crash-test hook (FEDMESH_REGISTRY_TEST_CRASH_AFTER_BLOB).
CRASH_EXIT_CODE = 70


def _now_ms() -> int:
    return int(time.time() * 1000)


def _crash() -> None:
    os._exit(CRASH_EXIT_CODE)


async def build(
    settings: RegistrySettings, redis: aioredis.Redis, metrics: RegistryMetrics | None = None
) -> list[ServiceBinding]:
    """Load the signing key, collect orphan blobs, and build the registry servicer."""
    metrics = metrics if metrics is not None else RegistryMetrics()
    signer = await asyncio.to_thread(RecordSigner.load_or_create, settings.signing_key)
    blobs = await asyncio.to_thread(BlobStore, settings.blob_dir)
    store = VersionStore(redis)
    locks = BlobLocks()
    await collect_orphans(store, blobs, locks)
    alarm = None
    if settings.alerting_address:
        channel = open_channel(
            settings.alerting_address,
            tls=settings.common.tls,
            default_timeout=settings.alert_timeout_s,
        )
        events = EventEmitter(channel, source="registry", timeout_s=settings.alert_timeout_s)
        alarm = AlertingAlarm(events)
    check = RecordCheck(signer, alarm, metrics)
    catalog = Catalog(store, blobs, check, signer)
    retention = Retention(store, blobs, locks, check, settings.keep_versions, metrics)
    aliases = AliasBook(redis)
    servicer = RegistryServicer(
        publisher=Publisher(
            redis=redis,
            store=store,
            blobs=blobs,
            locks=locks,
            catalog=catalog,
            signer=signer,
            retention=retention,
            max_model_bytes=settings.max_model_bytes,
            clock_ms=_now_ms,
            metrics=metrics,
            after_blob_placed=_crash if settings.crash_after_blob else None,
        ),
        catalog=catalog,
        streamer=BlobStreamer(blobs, check, metrics),
        verifier=ChainVerifier(store, blobs, check),
        promotions=Promotions(
            store,
            aliases,
            catalog,
            retention,
            PromotionGate(settings.promotion_margin),
            _now_ms,
            metrics,
        ),
        aliases=aliases,
        tls_required=settings.common.tls is not None,
    )

    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_RegistryServiceServicer_to_server(servicer, server)

    return [ServiceBinding(SERVICE_NAME, register)]


def readiness(redis: aioredis.Redis, blobs: BlobStore) -> Readiness:
    """Ready while Redis answers PING and the blob directory takes a synced file."""

    async def ready() -> bool:
        return bool(await redis.ping()) and await asyncio.to_thread(blobs.writable)

    return ready


async def serve(settings: RegistrySettings) -> None:
    """Run the registry until SIGTERM/SIGINT; SERVING while Redis answers and blobs are writable."""
    setup_tracing("registry")
    setup_logging("registry")
    embedded: EmbeddedRedis | None = None
    url = settings.common.redis_url
    if url is None:
        embedded = await asyncio.to_thread(EmbeddedRedis(settings.data_dir / "redis").start)
        url = embedded.url
        log.info("no FEDMESH_REDIS_URL; started an embedded Redis", extra={"fields": {"url": url}})
    redis = connect(url)
    metrics = RegistryMetrics()
    if settings.common.metrics_port:
        start_http_server(settings.common.metrics_port, registry=metrics.registry)
    try:
        running = await start_server(
            await build(settings, redis, metrics),
            address=settings.common.listen,
            tls=settings.common.tls,
            readiness=readiness(redis, BlobStore(settings.blob_dir)),
        )
        log.info("registry listening", extra={"fields": {"port": running.port}})
        if settings.common.listen.endswith(":0"):
            print(f"LISTENING {running.port}", flush=True)
        await serve_until_signal(running)
    finally:
        await redis.aclose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


def main() -> None:
    """Entry point of ``python -m fedmesh.services.registry`` and ``fedmesh serve registry``."""
    asyncio.run(serve(RegistrySettings.from_env()))
