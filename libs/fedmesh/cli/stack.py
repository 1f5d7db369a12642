"""The local stack: a real Redis and the four services as subprocesses on free ports.

Chaos tests drive it too: several coordinator replicas, SIGKILL / SIGSTOP of one
service, a restart of Redis on the same append-only file and port.
"""

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

from fedmesh.errors import FailedPrecondition, Unavailable
from fedmesh.store import EmbeddedRedis, free_port, redis_url_from_env

SERVICES = ("registry", "alerting", "aggregator", "coordinator")


@dataclass
class ServiceProcess:
    """One service subprocess and where it listens.

    ``name`` is unique in the stack (``coordinator-2`` for a second replica);
    ``service`` is the package it runs (``fedmesh.services.<service>``).
    """

    name: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    service: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.service = self.service or self.name

    @property
    def address(self) -> str:
        """host:port of the service."""
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the subprocess is alive (a paused one counts as alive)."""
        return self.process is not None and self.process.poll() is None


@dataclass
class LocalStack:
    """Redis (embedded unless FEDMESH_REDIS_URL is set) and the services, torn down on exit.

    ``extra_env`` is added to every service's environment (e.g. FEDMESH_TRACE_FILE).
    ``coordinator_replicas`` coordinator processes share one Redis; the first is
    ``services["coordinator"]``, the others ``coordinator-2``, ``coordinator-3``…
    and each has its replica id set to its name.
    """

    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    redis: EmbeddedRedis | None = None
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    redis_url: str = ""
    coordinator_replicas: int = 1

    def start(self, timeout_s: float = 60.0) -> LocalStack:
        """Start Redis and every service, and wait until each says SERVING."""
        if self.coordinator_replicas < 1:
            raise FailedPrecondition(
                f"coordinator_replicas is {self.coordinator_replicas}; expected at least 1"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        external = redis_url_from_env()
        if external:
            self.redis_url = external
        else:
            self.redis = EmbeddedRedis(self.workdir / "redis").start()
            self.redis_url = self.redis.url
        for name in SERVICES[:-1]:
            self.services[name] = ServiceProcess(
                name, free_port(), self.workdir / "logs" / f"{name}.log"
            )
        for index in range(1, self.coordinator_replicas + 1):
            name = "coordinator" if index == 1 else f"coordinator-{index}"
            self.services[name] = ServiceProcess(
                name,
                free_port(),
                self.workdir / "logs" / f"{name}.log",
                service="coordinator",
                env={"FEDMESH_COORDINATOR_REPLICA_ID": name},
            )
        try:
            for name in self.services:
                self.launch(name)
            for name in self.services:
                self.wait_serving(name, timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def coordinator_names(self) -> list[str]:
        """The names of the coordinator replicas, first one first."""
        return [s.name for s in self.services.values() if s.service == "coordinator"]

    @property
    def coordinator_target(self) -> str:
        """A gRPC target that reaches any live coordinator replica (fails over between them)."""
        addresses = [self.services[name].address for name in self.coordinator_names]
        if len(addresses) == 1:
            return addresses[0]
        return "ipv4:" + ",".join(addresses)

    def environment(self) -> dict[str, str]:
        """The FEDMESH_* variables every service gets."""
        env = dict(os.environ)
        env.update(
            {
                "FEDMESH_REDIS_URL": self.redis_url,
                "FEDMESH_REGISTRY_DATA_DIR": str(self.workdir / "registry"),
                "FEDMESH_AGGREGATOR_SPOOL_DIR": str(self.workdir / "aggregator-spool"),
                "FEDMESH_COORDINATOR_HEARTBEAT_S": "2",
                "FEDMESH_COORDINATOR_STALE_AFTER_S": "10",
            }
        )
        for name in SERVICES[:-1]:
            if name in self.services:
                env[f"FEDMESH_{name.upper()}_ADDRESS"] = self.services[name].address
        if self.coordinator_names:
            env["FEDMESH_COORDINATOR_ADDRESS"] = self.coordinator_target
        env.update(self.extra_env)
        return env

    def launch(self, name: str) -> None:
        """Start (or restart) one service subprocess."""
        svc = self.services[name]
        env = self.environment()
        env["FEDMESH_LISTEN"] = svc.address
        env.update(svc.env)
        with svc.log_path.open("ab") as log:
            svc.process = subprocess.Popen(
                [sys.executable, "-m", f"fedmesh.services.{svc.service}"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def restart(self, name: str, timeout_s: float = 60.0) -> None:
        """Start a stopped or killed service again on its port and wait until it is SERVING."""
        if self.services[name].running:
            raise FailedPrecondition(f"{name} is still running; kill or stop it first")
        self.launch(name)
        self.wait_serving(name, timeout_s)

    def wait_serving(self, name: str, timeout_s: float) -> None:
        """Block until ``name`` answers its health check with SERVING."""
        svc = self.services[name]
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(svc.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if not svc.running:
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
        if svc.running and svc.process is not None:
            os.killpg(svc.process.pid, signal.SIGKILL)
            svc.process.wait()

    def pause(self, name: str) -> None:
        """SIGSTOP one service: it holds its connections but answers nothing (chaos)."""
        self._signal(name, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        """SIGCONT a paused service."""
        self._signal(name, signal.SIGCONT)

    def _signal(self, name: str, signum: signal.Signals) -> None:
        svc = self.services[name]
        if not svc.running or svc.process is None:
            raise FailedPrecondition(f"{name} is not running")
        os.killpg(svc.process.pid, signum)

    def restart_redis(self, *, kill: bool = True, down_s: float = 0.0) -> None:
        """Kill (SIGKILL) or stop Redis, wait ``down_s``, start it on the same AOF dir and port."""
        if self.redis is None:
            raise FailedPrecondition(
                "Redis is external (FEDMESH_REDIS_URL); only the embedded one can be restarted"
            )
        if kill:
            self.redis.kill()
        else:
            self.redis.stop()
        time.sleep(down_s)
        self.redis = EmbeddedRedis(self.redis.data_dir, self.redis.port).start()

    def stop_service(self, name: str, grace_s: float = 10.0) -> None:
        """SIGTERM one service, SIGKILL it if it does not stop in time."""
        svc = self.services[name]
        if not svc.running or svc.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(svc.process.pid, signal.SIGCONT)
            os.killpg(svc.process.pid, signal.SIGTERM)
        try:
            svc.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(svc.process.pid, signal.SIGKILL)
            svc.process.wait()

    def stop(self) -> None:
        """Stop every service (coordinators first), then Redis; nothing is left running."""
        for name in reversed(list(self.services)):
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
