"""The one server factory: health, reflection, tracing, limits, TLS, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from fedmesh.rpc.limits import MAX_MESSAGE_BYTES
from fedmesh.rpc.tls import TlsFiles

log = logging.getLogger(__name__)

Readiness = Callable[[], Awaitable[bool]]
# Health name that says SERVING while the process runs, whatever its dependencies:
# liveness probes ask it, so a Redis outage makes pods unready, not restarted.
LIVENESS_SERVICE = "fedmesh.liveness"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer to add to the server, under its full proto service name."""

    name: str
    register: Callable[[grpc.aio.Server], None]


@dataclass
class RunningServer:
    """A started server, its bound port, and its health state."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer
    service_names: Sequence[str]
    _probe: asyncio.Task[None] | None = field(default=None, repr=False)

    async def set_serving(self, serving: bool) -> None:
        """Report SERVING or NOT_SERVING for every service and the server as a whole."""
        status = SERVING if serving else NOT_SERVING
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def stop(self, grace: float = 5.0) -> None:
        """Say NOT_SERVING, let calls in flight finish for ``grace`` seconds, stop."""
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)

    async def wait_for_termination(self) -> None:
        """Block until the server stops."""
        await self.server.wait_for_termination()


async def _probe_loop(running: RunningServer, readiness: Readiness, interval: float) -> None:
    last: bool | None = None
    while True:
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancellation
            # that stop() sends, and the server would never stop.
            async with asyncio.timeout(interval):
                ready = await readiness()
        except Exception:  # a probe that raises or times out means "not ready"
            ready = False
        if ready != last:
            log.info("readiness changed", extra={"fields": {"serving": ready}})
            await running.set_serving(ready)
            last = ready
        await asyncio.sleep(interval)


async def start_server(
    bindings: Sequence[ServiceBinding],
    *,
    address: str = "127.0.0.1:0",
    tls: TlsFiles | None = None,
    readiness: Readiness | None = None,
    probe_interval: float = 1.0,
) -> RunningServer:
    """Build, bind and start an aio server; port 0 picks a free port.

    Health says SERVING only while ``readiness`` (dependencies reachable) holds,
    and NOT_SERVING from the moment a graceful stop begins.
    """
    server = grpc.aio.server(
        interceptors=[aio_server_interceptor()],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    for binding in bindings:
        binding.register(server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [b.name for b in bindings]
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, tls.server_credentials())
    await server.start()
    running = RunningServer(server, port, health, names)
    await health.set(LIVENESS_SERVICE, SERVING)
    if readiness is None:
        await running.set_serving(True)
    else:
        await running.set_serving(False)
        running._probe = asyncio.create_task(_probe_loop(running, readiness, probe_interval))
    return running


async def serve_until_signal(running: RunningServer, grace: float = 5.0) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.create_task(running.wait_for_termination())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set():
        log.info("signal received; stopping gracefully")
        await running.stop(grace)
    for task in (waiter, stopper):
        task.cancel()
