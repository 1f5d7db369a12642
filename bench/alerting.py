"""Alerting: events per second ingested with dedup, and ReportAnomaly → webhook delay.

Run: .venv/bin/python bench/alerting.py [--events 20000] [--reports 300]

The real service runs as its own process (``python -m fedmesh.services.alerting``)
over an embedded Redis, with a rule file that notifies each node's anomaly at
once (group_wait 0) to a webhook receiver — a real HTTP server in this process.

- ``grpc_unary_ceiling``: a bare grpcio server (no tracing, no work) answering the
  same ``Emit`` calls, 64 in flight: what one Python process can do per unary call.
- ``emit_unary``: identical events through ``Emit``, 64 calls in flight.
- ``emit_batch_storm``: identical events through ``EmitBatch`` (500 per call, 4 in flight).
- ``emit_batch_mixed``: events of 100 alerts interleaved, so no two neighbours fold:
  one script call per event.
- ``store_floor_mixed``: those interleaved events straight into the store (pipelined,
  no gRPC): the floor that gRPC and validation are measured against.
Each run must leave one alert per label set whose count is its number of events.
The delay runs from just before ``ReportAnomaly`` to the webhook's receipt of
the notification carrying that node's alert; reports are spaced so the delay is
not queueing. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc

from fedmesh.client.alerting import AlertingClient, Event
from fedmesh.proto.alerting.v1 import alerting_pb2 as pb
from fedmesh.proto.alerting.v1 import alerting_pb2_grpc as pb_grpc
from fedmesh.rpc import open_channel
from fedmesh.services.alerting.alert_store import AlertStore
from fedmesh.services.alerting.drafts import Drafter
from fedmesh.services.alerting.model import Event as DomainEvent
from fedmesh.services.alerting.rule_file import parse_rulebook
from fedmesh.store import EmbeddedRedis, connect

TARGET_EVENTS_PER_S = 5000
BATCH = 500
UNARY_IN_FLIGHT = 64
BATCHES_IN_FLIGHT = 4
REPORT_SPACING_S = 0.01
MIXED_ALERTS = 100
SERVICE = pb.DESCRIPTOR.services_by_name["AlertingService"].full_name
EMPTY_REPLY = pb.EmitResponse().SerializeToString()
RULES = """\
route:
  receivers: [webhook]
  group_by: [alertname, node]
  group_wait: 0s
  group_interval: 1m
  repeat_interval: 4h
events:
  round_failed: {alert: RoundFailed, severity: high}
  sink_failing: {alert: AlertSinkFailing, severity: high}
anomaly:
  alert: NodeAnomaly
  bands:
    - {min_score: 0.9, severity: critical}
    - {min_score: 0.7, severity: high}
    - {min_score: 0.5, severity: medium}
"""


class Receiver:
    """A webhook endpoint that notes when each node's alert first arrives."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                now = time.perf_counter()
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.lock:
                    for alert in body["alerts"]:
                        node = alert["labels"].get("node")
                        if node is not None:
                            receiver.arrivals.setdefault(node, now)
                    receiver.lock.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def wait_for(self, nodes: int, timeout_s: float) -> bool:
        """Whether ``nodes`` nodes' alerts arrived within ``timeout_s``."""
        with self.lock:
            return self.lock.wait_for(lambda: len(self.arrivals) >= nodes, timeout_s)

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


async def rate(events: int, work: Callable[[], Awaitable[None]]) -> float:
    """Events per second of ``work``."""
    started = time.perf_counter()
    await work()
    return events / (time.perf_counter() - started)


async def emit_unary(client: AlertingClient, events: int, run: str) -> None:
    """``events`` identical Emit calls, ``UNARY_IN_FLIGHT`` at a time."""
    queue = iter(range(events))

    async def worker() -> None:
        for _ in queue:
            await client.emit("round_failed", source="bench", labels={"run": run})

    await asyncio.gather(*(worker() for _ in range(UNARY_IN_FLIGHT)))


def batch_events(run: str, events: int, alerts: int) -> list[Event]:
    """``events`` events of ``alerts`` alerts of ``run``, interleaved (no two neighbours alike)."""
    return [
        Event("round_failed", "bench", {"run": run, "round": str(i % alerts)})
        for i in range(events)
    ]


async def emit_batches(client: AlertingClient, events: list[Event]) -> None:
    """``events`` in EmitBatch calls of ``BATCH``, ``BATCHES_IN_FLIGHT`` at a time."""
    queue = iter(range(0, len(events), BATCH))

    async def worker() -> None:
        for start in queue:
            await client.emit_batch(events[start : start + BATCH])

    await asyncio.gather(*(worker() for _ in range(BATCHES_IN_FLIGHT)))


async def store_floor(redis_url: str, events: list[Event]) -> float:
    """Events per second straight into the store, pipelined ``BATCH`` at a time."""
    redis = connect(redis_url)
    store = AlertStore(redis)
    drafter = Drafter(parse_rulebook(RULES, "bench"))
    now = time.time_ns() // 1_000_000
    drafts = [drafter.from_event(DomainEvent(e.kind, e.source, e.labels), now) for e in events]

    async def work() -> None:
        for start in range(0, len(drafts), BATCH):
            await store.ingest_many(drafts[start : start + BATCH], time.time_ns() // 1_000_000)

    try:
        return await rate(len(events), work)
    finally:
        await redis.aclose()


async def check_counts(client: AlertingClient, run: str, events: int, alerts: int) -> None:
    """One alert per label set of ``run``, each counting its share of the events."""
    counts = [a.count for a in await client.list_alerts(labels={"run": run})]
    if counts != [events // alerts] * alerts:
        raise SystemExit(f"{run}: expected {alerts} alerts of {events // alerts}, got {counts}")


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def anomaly_delays(
    client: AlertingClient, receiver: Receiver, reports: int
) -> tuple[list[float], list[float]]:
    """(report → webhook delays, ReportAnomaly call times), in ms."""
    sent: dict[str, float] = {}
    calls = []
    for i in range(reports):
        node = f"bench-n{i}"
        sent[node] = time.perf_counter()
        await client.report_anomaly(node, 0.95, {"loss_rate": 0.4}, "bench-detector", 1, "r1")
        calls.append((time.perf_counter() - sent[node]) * 1000)
        await asyncio.sleep(REPORT_SPACING_S)
    if not await asyncio.to_thread(receiver.wait_for, reports, 60.0):
        raise SystemExit(
            f"only {len(receiver.arrivals)} of {reports} anomalies reached the webhook"
        )
    return [(receiver.arrivals[n] - t) * 1000 for n, t in sent.items()], calls


async def raw_emit(request: pb.EmitRequest, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    """Answers Emit and does nothing: the transport's ceiling."""
    return EMPTY_REPLY


async def serve_raw() -> None:
    """A bare grpcio server (no interceptors) on a free port; prints LISTENING <port>."""
    server = grpc.aio.server()
    emit: grpc.RpcMethodHandler[pb.EmitRequest, bytes] = grpc.unary_unary_rpc_method_handler(
        raw_emit, request_deserializer=pb.EmitRequest.FromString
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Emit": emit}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"LISTENING {port}", flush=True)
    await server.wait_for_termination()


async def start(args: list[str], env: dict[str, str]) -> tuple[asyncio.subprocess.Process, int]:
    """A server process and the port it printed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 120)
    return process, int(line.decode().removeprefix("LISTENING "))


async def stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM and wait."""
    process.terminate()
    await process.wait()


async def unary_ceiling(events: int) -> float:
    """Unary calls per second a bare grpcio server answers, same client, same concurrency."""
    process, port = await start([__file__, "--serve-raw"], dict(os.environ))
    try:
        async with open_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.AlertingServiceStub(channel)
            queue = iter(range(events))
            request = pb.EmitRequest(event=pb.Event(kind="round_failed", source="bench"))

            async def worker() -> None:
                for _ in queue:
                    await stub.Emit(request)

            async def all_workers() -> None:
                await asyncio.gather(*(worker() for _ in range(UNARY_IN_FLIGHT)))

            return await rate(events, all_workers)
    finally:
        await stop(process)


async def run(events: int, reports: int, workdir: Path) -> dict[str, Any]:
    """Every measurement; the JSON report."""
    rules = workdir / "rules.yaml"
    rules.write_text(RULES)
    receiver = Receiver()
    ceiling = await unary_ceiling(events)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDMESH_ALERTING_")}
    batch_total = events * 4 // BATCH * BATCH
    storm = batch_events("storm", batch_total, 1)
    mixed = batch_events("mixed", batch_total, MIXED_ALERTS)
    with EmbeddedRedis(workdir / "redis") as redis_server:
        env.update(
            {
                "FEDMESH_LISTEN": "127.0.0.1:0",
                "FEDMESH_REDIS_URL": redis_server.url,
                "FEDMESH_ALERTING_RULES": str(rules),
                "FEDMESH_ALERTING_WEBHOOK_URL": receiver.url,
                "FEDMESH_LOG_LEVEL": "WARNING",
            }
        )
        service, port = await start(["-m", "fedmesh.services.alerting"], env)
        try:
            async with open_channel(f"127.0.0.1:{port}") as channel:
                client = AlertingClient(channel)
                await client.emit("round_failed", source="bench", labels={"run": "warm-up"})
                unary = await rate(events, lambda: emit_unary(client, events, "unary"))
                await check_counts(client, "unary", events, 1)
                batched = await rate(batch_total, lambda: emit_batches(client, storm))
                await check_counts(client, "storm", batch_total, 1)
                interleaved = await rate(batch_total, lambda: emit_batches(client, mixed))
                await check_counts(client, "mixed", batch_total, MIXED_ALERTS)
                delays, calls = await anomaly_delays(client, receiver, reports)
            floor = await store_floor(redis_server.url, batch_events("floor", batch_total, 100))
        finally:
            await stop(service)
            receiver.close()
    return {
        "bench": "alerting",
        "events_unary": events,
        "events_batch": batch_total,
        "grpc_unary_ceiling_calls_per_s": round(ceiling),
        "emit_unary_events_per_s": round(unary),
        "emit_batch_storm_events_per_s": round(batched),
        "emit_batch_mixed_events_per_s": round(interleaved),
        "store_floor_mixed_events_per_s": round(floor),
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "meets_target": max(batched, interleaved) >= TARGET_EVENTS_PER_S,
        "anomaly_to_webhook_ms": {
            "p50": round(percentile(delays, 0.5), 2),
            "p99": round(percentile(delays, 0.99), 2),
            "mean": round(statistics.fmean(delays), 2),
            "n": len(delays),
        },
        "report_anomaly_rpc_ms": {
            "p50": round(percentile(calls, 0.5), 2),
            "p99": round(percentile(calls, 0.99), 2),
        },
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def main() -> None:
    """Parse arguments, run, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000, help="events per unary run")
    parser.add_argument("--reports", type=int, default=300, help="anomaly reports timed")
    parser.add_argument("--serve-raw", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_raw:
        asyncio.run(serve_raw())
        return
    with tempfile.TemporaryDirectory(prefix="fedmesh-bench-alerting-") as workdir:
        print(json.dumps(asyncio.run(run(args.events, args.reports, Path(workdir)))))


if __name__ == "__main__":
    main()
