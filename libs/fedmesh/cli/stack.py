"""The local stack: a real Redis and the four services as subprocesses on free ports."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedmesh.errors import Unavailable
from fedmesh.store import EmbeddedRedis, free_port, redis_url_from_env

SERVICES = ("registry", "alerting", "aggregator", "coordinator")


@dataclass
class ServiceProcess:
    """One service subprocess and where it listens."""

    name: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """host:port of the service."""
        return f"127.0.0.1:{self.port}"


@dataclass
class LocalStack:
    """Redis (embedded unless FEDMESH_REDIS_URL is set) and the services, torn down on exit.

    ``extra_env`` is added to every service's environment (e.g. FEDMESH_TRACE_FILE).
    """

    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    redis: EmbeddedRedis | None = None
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    redis_url: str = ""

    def start(self, timeout_s: float = 60.0) -> LocalStack:
        """Start Redis and every service, and wait until each says SERVING."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        external = redis_url_from_env()
        if external:
            self.redis_url = external
        else:
            self.redis = EmbeddedRedis(self.workdir / "redis").start()
            self.redis_url = self.redis.url
        for name in SERVICES:
            self.services[name] = ServiceProcess(
                name, free_port(), self.workdir / "logs" / f"{name}.log"
            )
        try:
            for name in SERVICES:
                self.launch(name)
            for name in SERVICES:
                self.wait_serving(name, timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def environment(self) -> dict[str, str]:
        """The FEDMESH_* variables every service gets."""
        env = dict(os.environ)
        env.update(
            {
                "FEDMESH_REDIS_URL": self.redis_url,
                "FEDMESH_REGISTRY_BLOB_DIR": str(self.workdir / "registry-blobs"),
                "FEDMESH_REGISTRY_KEY_FILE": str(self.workdir / "registry-signing.key"),
                "FEDMESH_AGGREGATOR_SPOOL_DIR": str(self.workdir / "aggregator-spool"),
                "FEDMESH_COORDINATOR_HEARTBEAT_S": "2",
                "FEDMESH_COORDINATOR_STALE_AFTER_S": "10",
            }
        )
        for svc in self.services.values():
            env[f"FEDMESH_{svc.name.upper()}_ADDRESS"] = svc.address
        env.update(self.extra_env)
        return env

    def launch(self, name: str) -> None:
        """Start (or restart) one service subprocess."""
        svc = self.services[name]
        env = self.environment()
        env["FEDMESH_LISTEN"] = svc.address
        with svc.log_path.open("ab") as log:
            svc.process = subprocess.Popen(
                [sys.executable, "-m", f"fedmesh.services.{name}"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_serving(self, name: str, timeout_s: float) -> None:
        """Block until ``name`` answers its health check with SERVING."""
        svc = self.services[name]
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(svc.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if svc.process is None or svc.process.poll() is not None:
                    raise Unavailable(f"{name} exited during start-up:\n{self.log_tail(name)}")
                with contextlib.suppress(grpc.RpcError):
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                if time.monotonic() > deadline:
                    raise Unavailable(
                        f"{name} was not SERVING after {timeout_s:.0f} s:\n{self.log_tail(name)}"
                    )
                time.sleep(0.1)

    def log_tail(self, name: str, lines: int = 30) -> str:
        """The last lines of a service's log."""
        path = self.services[name].log_path
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self, name: str) -> None:
        """SIGKILL one service (chaos)."""
        svc = self.services[name]
        if svc.process is not None and svc.process.poll() is None:
            os.killpg(svc.process.pid, signal.SIGKILL)
            svc.process.wait()

    def stop_service(self, name: str, grace_s: float = 10.0) -> None:
        """SIGTERM one service, SIGKILL it if it does not stop in time."""
        svc = self.services[name]
        if svc.process is None or svc.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(svc.process.pid, signal.SIGTERM)
        try:
            svc.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(svc.process.pid, signal.SIGKILL)
            svc.process.wait()

    def stop(self) -> None:
        """Stop every service, then Redis; nothing is left running."""
        for name in reversed(SERVICES):
            if name in self.services:
                self.stop_service(name)
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
