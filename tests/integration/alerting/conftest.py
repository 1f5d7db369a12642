"""Alerting integration fixtures: a real webhook receiver and the service on port 0."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from fedmesh.client.alerting import AlertingClient
from fedmesh.rpc import open_channel, start_server
from fedmesh.services.alerting.server import build
from fedmesh.services.alerting.settings import AlertingSettings
from fedmesh.store import connect

RULES = """\
route:
  receivers: [log, webhook, alertmanager]
  group_by: [alertname, node]
  group_wait: 0s
  group_interval: 100ms
  repeat_interval: 1h
events:
  round_failed:
    alert: RoundFailed
    severity: high
    annotations:
      summary: "Round {round} of run {run} failed"
  node_stale:
    alert: NodeStale
    severity: medium
    resolve_timeout: 300ms
    annotations:
      summary: "Node {node} stopped sending heartbeats"
  mesh_partition:
    alert: MeshPartition
    severity: critical
  sink_failing:
    alert: AlertSinkFailing
    severity: high
anomaly:
  alert: NodeAnomaly
  bands:
    - {min_score: 0.9, severity: critical}
    - {min_score: 0.7, severity: high}
    - {min_score: 0.5, severity: medium}
  annotations:
    summary: "Node {node} looks anomalous (score {score:.2f})"
inhibit_rules:
  - source_matchers: ['alertname="MeshPartition"']
    target_matchers: ['alertname="NodeStale"']
    equal: [region]
"""


@dataclass
class Delivery:
    """One POST the receiver got, and the status it answered."""

    path: str
    headers: dict[str, str]
    body: Any
    answered: int


@dataclass
class Receiver:
    """A real HTTP server that records JSON POSTs and answers ``status``."""

    status: int = 200
    deliveries: list[Delivery] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted(self) -> list[Any]:
        """Bodies answered with a 2xx status."""
        with self.lock:
            return [d.body for d in self.deliveries if 200 <= d.answered < 300]

    def refused(self) -> int:
        """How many POSTs were answered with an error."""
        with self.lock:
            return sum(1 for d in self.deliveries if d.answered >= 300)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                answered = state.status
                state.deliveries.append(Delivery(self.path, dict(self.headers), body, answered))
            self.send_response(answered)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}/hooks/fedmesh?token=s3cret"
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


@dataclass
class Alerting:
    """A running alerting service: its client, port, and the stack that stops it."""

    client: AlertingClient
    port: int
    stack: AsyncExitStack


StartAlerting = Callable[..., Awaitable[Alerting]]


@pytest.fixture
async def start_alerting(
    redis_url: str,
    redis_client: aioredis.Redis,
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[StartAlerting]:
    """Starts the service (again, for restarts) on the test's Redis; stops all at the end."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    environment = {
        "FEDMESH_ALERTING_RULES": str(rules),
        "FEDMESH_ALERTING_WEBHOOK_URL": receiver.url,
        "FEDMESH_ALERTING_WEBHOOK_TOKEN": "t0ken",
        "FEDMESH_ALERTING_EXTERNAL_URL": "https://alerting.example",
        "FEDMESH_ALERTING_TICK_S": "0.05",
        "FEDMESH_ALERTING_RETRY_BASE_S": "0.05",
        "FEDMESH_ALERTING_RETRY_MAX_S": "0.2",
        "FEDMESH_ALERTING_UNHEALTHY_AFTER": "3",
    }
    async with AsyncExitStack() as everything:

        async def start(**overrides: str) -> Alerting:
            for name, value in {**environment, **overrides}.items():
                monkeypatch.setenv(name, value)
            stack = AsyncExitStack()
            everything.push_async_callback(stack.aclose)
            redis = connect(redis_url)
            stack.push_async_callback(redis.aclose)
            settings = AlertingSettings.from_env()
            running = await start_server(
                await build(settings, redis, stack), tls=settings.common.tls
            )
            stack.push_async_callback(running.stop, 0)
            channel = open_channel(f"127.0.0.1:{running.port}", default_timeout=10)
            stack.push_async_callback(channel.close)
            return Alerting(AlertingClient(channel), running.port, stack)

        yield start


Until = Callable[[Callable[[], Awaitable[bool]]], Awaitable[None]]


@pytest.fixture
def until() -> Until:
    """Waits (up to 15 s) for a condition; fails the test if it never holds."""

    async def wait(condition: Callable[[], Awaitable[bool]]) -> None:
        for _ in range(750):
            if await condition():
                return
            await asyncio.sleep(0.02)
        raise AssertionError("condition never held")

    return wait
