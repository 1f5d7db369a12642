"""Round benchmarks: fedmesh's control plane at 1,000 nodes, a 1M-parameter round's breakdown
from its trace, and the same round load through Flower's deployment engine.

Run: .venv/bin/python bench/rounds.py [--quick] [--only a,b,c]

(a) 1,000 light nodes (real RPCs: RegisterNode, Heartbeat, StreamTasks, DownloadModel,
    SubmitUpdate) and a tiny model; per round, the control-plane time: the round's wall
    time (opened → closed, as the coordinator records it) minus the slowest
    participant's local work.
(b) 100 light nodes and a 1M-parameter float32 model, every span written to
    FEDMESH_TRACE_FILE (JSON lines); per round, the wall time and its breakdown from
    the round's trace: task delivery, download, train, upload, wait for the
    coordinator to close collection, aggregate (AggregateRound) and publish
    (PublishModel, inside aggregate), close.
(c) 10 nodes, a model of 1M float32, nodes that answer at once: fedmesh, then Flower's
    deployment engine (flower-superlink and 10 flower-supernode processes on loopback,
    a ServerApp running FedAvg and a ClientApp that returns at once; from
    bench/peers/.venv) in the same run.

Each scenario runs in a child process of its own (its stack, its tracing, its event
loop); the parent prints one JSON line and writes bench/results/rounds.md
(rounds-quick.md with --quick). Selection is capped at 50 participants per round
(DESIGN §8), so (a) and (b) select 50 of their nodes per round.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from opentelemetry import trace

from fedmesh.cli.stack import LocalStack
from fedmesh.client.aggregator import AggregatorClient
from fedmesh.client.coordinator import CoordinatorClient
from fedmesh.client.registry import RegistryClient
from fedmesh.client.signing import NodeSigner
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.proto.coordinator.v1 import coordinator_pb2 as pb
from fedmesh.rpc import open_channel
from fedmesh.stopping import stop
from fedmesh.store import free_port
from fedmesh.telemetry import context_from_carrier, setup_tracing
from fedmesh.tensors import Manifest, TensorSpec, encode_header, header_length, parse_header

ROOT = Path(__file__).resolve().parent
PEER_BIN = ROOT / "peers" / ".venv" / "bin"
RESULTS = ROOT / "results"
MODEL = "bench-model"
# Up to this many nodes, each has connections of its own; beyond, 100 nodes share them.
OWN_CHANNELS_UP_TO = 100
NODES_PER_CHANNEL = 100
REGISTER_CONCURRENCY = 50
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_tracer = trace.get_tracer("bench.rounds")


@dataclass(frozen=True)
class Scenario:
    """One scenario's load."""

    nodes: int
    rounds: int
    target: int
    model_floats: int
    trace: bool = False


SCENARIOS = {
    "a": Scenario(nodes=1000, rounds=5, target=50, model_floats=1_040),
    "b": Scenario(nodes=100, rounds=3, target=50, model_floats=1_000_000, trace=True),
    "c": Scenario(nodes=10, rounds=5, target=10, model_floats=1_000_000),
}
QUICK = {
    "a": Scenario(nodes=200, rounds=3, target=50, model_floats=1_040),
    "b": Scenario(nodes=30, rounds=2, target=20, model_floats=1_000_000, trace=True),
    "c": Scenario(nodes=10, rounds=2, target=10, model_floats=1_000_000),
}
FLOWER_ROUNDS = {False: 3, True: 2}


# ---------------------------------------------------------------- light nodes


def model_manifest(floats: int) -> Manifest:
    """One float32 matrix (or vector for small sizes) of ``floats`` values."""
    side = 1000 if floats % 1000 == 0 else floats
    shape = (floats // side, side) if side != floats else (floats,)
    return Manifest.of([TensorSpec("layer.weight", "float32", shape)])


def initial_payload(floats: int) -> bytes:
    """The canonical payload of the starting model: small random values, fixed seed."""
    values = np.random.default_rng(7).standard_normal(floats, dtype=np.float32) * 0.01
    return encode_header(model_manifest(floats)) + values.astype("<f4").tobytes()


def local_update(payload: bytes) -> tuple[Manifest, bytes, str]:
    """A node's "training": a delta of the model it downloaded, its manifest and digest."""
    head = payload[: 8 + header_length(payload)]
    parsed = parse_header(head)
    base = np.frombuffer(payload, dtype="<f4", offset=parsed.data_offset)
    delta = (base * np.float32(-0.001)).astype("<f4")
    data = head + delta.tobytes()
    return parsed.manifest, data, hashlib.sha256(data).hexdigest()


@dataclass
class NodeRound:
    """What one node did in one round, in wall-clock seconds."""

    node_id: str
    round_no: int
    trace_id: str
    received: float
    download_s: float
    train_s: float
    upload_s: float
    finished: float


class BenchNode:
    """A light node over the real RPCs; its local work is `local_update`."""

    def __init__(
        self,
        node_id: str,
        coordinator: CoordinatorClient,
        registry: RegistryClient,
        aggregator: AggregatorClient,
        work: list[NodeRound],
    ) -> None:
        self.node_id = node_id
        self._coordinator = coordinator
        self._registry = registry
        self._aggregator = aggregator
        self._work = work
        self._done: set[str] = set()
        self._signer = NodeSigner.generate()

    async def register(self) -> float:
        """Register (retrying while the coordinator is unreachable); the heartbeat interval."""
        while True:
            try:
                response = await self._coordinator.register(
                    self.node_id, 100, "bench", {}, self._signer.public_key
                )
                return float(response.heartbeat_interval_s)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE:
                    raise
                await asyncio.sleep(0.5)

    async def run(self, heartbeat_s: float) -> None:
        """Beat and serve tasks until cancelled."""
        beats = asyncio.create_task(self._beat(heartbeat_s))
        try:
            await self._serve()
        finally:
            await stop(beats)

    async def _beat(self, interval_s: float) -> None:
        await asyncio.sleep(random.uniform(0, interval_s))
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._coordinator.heartbeat(self.node_id)
            await asyncio.sleep(interval_s)

    async def _serve(self) -> None:
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                async for task in self._coordinator.tasks(self.node_id, stream_timeout_s=3600):
                    if task.task_id in self._done or task.kind != pb.TASK_KIND_TRAIN:
                        continue
                    self._done.add(task.task_id)
                    await self._train(task)
            await asyncio.sleep(0.5)

    async def _train(self, task: pb.Task) -> None:
        received = time.time()
        carrier = dict(task.trace_context.carrier)
        trace_id = carrier.get("traceparent", "--").split("-")[1]
        with _tracer.start_as_current_span(
            "node-task",
            context=context_from_carrier(carrier),
            attributes={"node": self.node_id, "round": task.round},
        ):
            with _tracer.start_as_current_span("download"):
                started = time.perf_counter()
                payload = await self._registry.download(task.model.name, version=task.model.version)
                download_s = time.perf_counter() - started
            with _tracer.start_as_current_span("train"):
                started = time.perf_counter()
                manifest, data, digest = await asyncio.to_thread(local_update, payload)
                train_s = time.perf_counter() - started
            with _tracer.start_as_current_span("upload"):
                started = time.perf_counter()
                await self._aggregator.submit_update(
                    run_id=task.run_id,
                    round_no=task.round,
                    node_id=self.node_id,
                    manifest=manifest,
                    digest=digest,
                    num_samples=100,
                    payload_bytes=len(data),
                    base_model=task.model,
                    local_loss=0.5,
                    chunks=lambda: _chunks(data),
                    deadline_s=300,
                    signer=self._signer,
                )
                upload_s = time.perf_counter() - started
        self._work.append(
            NodeRound(
                self.node_id,
                task.round,
                trace_id,
                received,
                download_s,
                train_s,
                upload_s,
                time.time(),
            )
        )


def _chunks(data: bytes, size: int = 1 << 20) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


class Fleet:
    """Light nodes in this process; a few shared channels per service, as behind a proxy."""

    def __init__(self, stack: LocalStack, count: int) -> None:
        self.work: list[NodeRound] = []
        self._stack = stack
        self._count = count
        self._channels: list[grpc.aio.Channel] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> float:
        """Register every node and start them; returns the registration time in seconds."""
        nodes = []
        sharing = 1 if self._count <= OWN_CHANNELS_UP_TO else NODES_PER_CHANNEL
        for index in range(self._count):
            if index % sharing == 0:
                coordinator = CoordinatorClient(self._channel("coordinator", 30))
                registry = RegistryClient(self._channel("registry", 300))
                aggregator = AggregatorClient(self._channel("aggregator", 300))
            nodes.append(
                BenchNode(f"node-{index:04d}", coordinator, registry, aggregator, self.work)
            )
        gate = asyncio.Semaphore(REGISTER_CONCURRENCY)

        async def register(node: BenchNode) -> float:
            async with gate:
                return await node.register()

        started = time.perf_counter()
        intervals = await asyncio.gather(*(register(node) for node in nodes))
        registration_s = time.perf_counter() - started
        for node, interval in zip(nodes, intervals, strict=True):
            self._tasks.append(asyncio.create_task(node.run(interval), name=node.node_id))
        return registration_s

    def _channel(self, service: str, timeout_s: float) -> grpc.aio.Channel:
        channel = open_channel(self._stack.services[service].address, default_timeout=timeout_s)
        self._channels.append(channel)
        return channel

    async def close(self) -> None:
        """Stop the nodes and close their channels."""
        await asyncio.gather(*(stop(task) for task in self._tasks))
        for channel in self._channels:
            await channel.close()


# ---------------------------------------------------------------- fedmesh scenarios


@dataclass
class RoundFigures:
    """One round as the coordinator recorded it, with its slowest participant's work."""

    round_no: int
    phase: str
    participants: int
    received: int
    wall_s: float
    slowest_local_work_s: float
    control_plane_s: float


@dataclass
class FedmeshRun:
    """What a fedmesh scenario measured."""

    nodes: int
    rounds: list[RoundFigures]
    registration_s: float
    run_s: float
    work: list[NodeRound] = field(repr=False)
    state: pb.GetRunResponse = field(repr=False)


async def run_fedmesh(scenario: Scenario, workdir: Path) -> FedmeshRun:
    """Start a stack, a fleet and one FedAvg run; measure each round."""
    env = {"FEDMESH_COORDINATOR_HEARTBEAT_S": "10", "FEDMESH_COORDINATOR_STALE_AFTER_S": "30"}
    if scenario.trace:
        env["FEDMESH_TRACE_FILE"] = str(workdir / "spans.jsonl")
    stack = await asyncio.to_thread(LocalStack(workdir / "stack", extra_env=env).start)
    try:
        return await _drive(stack, scenario)
    finally:
        await asyncio.to_thread(stack.stop)


async def _drive(stack: LocalStack, scenario: Scenario) -> FedmeshRun:
    fleet = Fleet(stack, scenario.nodes)
    async with (
        open_channel(stack.services["coordinator"].address, default_timeout=60) as ops,
        open_channel(stack.services["registry"].address, default_timeout=300) as reg,
    ):
        coordinator, registry = CoordinatorClient(ops, timeout_s=60), RegistryClient(reg)
        base = initial_payload(scenario.model_floats)
        await registry.publish(
            MODEL,
            iter([base]),
            manifest=model_manifest(scenario.model_floats),
            digest=hashlib.sha256(base).hexdigest(),
            size_bytes=len(base),
        )
        try:
            registration_s = await fleet.start()
            await _all_online(coordinator, scenario.nodes)
            run = await coordinator.start_run(_spec(scenario))
            started = time.perf_counter()
            while True:
                state = await coordinator.get_run(run.run_id)
                if state.run.status != pb.RUN_STATUS_RUNNING:
                    break
                await asyncio.sleep(0.5)
            run_s = time.perf_counter() - started
        finally:
            await fleet.close()
    rounds = [_round_figures(info, fleet.work) for info in state.rounds]
    return FedmeshRun(scenario.nodes, rounds, registration_s, run_s, fleet.work, state)


async def _all_online(coordinator: CoordinatorClient, count: int, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        status = await coordinator.status()
        if status.nodes_online >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{status.nodes_online} of {count} nodes online after {timeout_s} s")
        await asyncio.sleep(0.5)


def _spec(scenario: Scenario) -> pb.RunSpec:
    return pb.RunSpec(
        model_name=MODEL,
        aggregation=common.AggregationSpec(rule=common.AGGREGATION_RULE_FEDAVG),
        rounds=scenario.rounds,
        min_participants=scenario.target,
        target_participants=scenario.target,
        over_selection=0.0,
        collect_deadline_s=600,
        aggregate_deadline_s=600,
        seed=11,
    )


def _round_figures(info: pb.RoundInfo, work: Sequence[NodeRound]) -> RoundFigures:
    wall_s = (info.closed_unix_ms - info.opened_unix_ms) / 1000
    local = [w.train_s for w in work if w.round_no == info.round]
    slowest = max(local, default=0.0)
    return RoundFigures(
        round_no=info.round,
        phase=pb.RoundPhase.Name(info.phase).removeprefix("ROUND_PHASE_"),
        participants=len(info.participants),
        received=len(info.received),
        wall_s=wall_s,
        slowest_local_work_s=slowest,
        control_plane_s=wall_s - slowest,
    )


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def scenario_a(scenario: Scenario, workdir: Path) -> dict[str, Any]:
    """(a) the control plane per round with many nodes and a tiny model."""
    measured = asyncio.run(run_fedmesh(scenario, workdir))
    control = [r.control_plane_s for r in measured.rounds]
    return {
        "nodes": measured.nodes,
        "model_floats": scenario.model_floats,
        "selected_per_round": scenario.target,
        "registration_s": round(measured.registration_s, 2),
        "control_plane_s_median": round(_median(control), 3),
        "control_plane_s_max": round(max(control), 3),
        "round_wall_s_median": round(_median([r.wall_s for r in measured.rounds]), 3),
        "rounds": [asdict(r) for r in measured.rounds],
    }


def scenario_b(scenario: Scenario, workdir: Path) -> dict[str, Any]:
    """(b) a 1M-parameter round's wall time and its breakdown from the trace."""
    os.environ["FEDMESH_TRACE_FILE"] = str(workdir / "spans.jsonl")
    setup_tracing("bench-node")
    measured = asyncio.run(run_fedmesh(scenario, workdir))
    spans = _load_spans(workdir / "spans.jsonl", {w.trace_id for w in measured.work})
    breakdowns = [
        _breakdown(info, [w for w in measured.work if w.round_no == info.round], spans)
        for info in measured.state.rounds
        if info.phase == pb.ROUND_PHASE_COMPLETED
    ]
    keys = breakdowns[0].keys() if breakdowns else []
    return {
        "nodes": measured.nodes,
        "model_floats": scenario.model_floats,
        "selected_per_round": scenario.target,
        "rounds": breakdowns,
        "median": {
            k: round(_median([b[k] for b in breakdowns]), 3)
            for k in keys
            if k not in ("round", "participants", "spans_in_trace")
        },
    }


def _load_spans(path: Path, trace_ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    by_trace: dict[str, list[dict[str, Any]]] = {t: [] for t in trace_ids}
    with path.open() as lines:
        for line in lines:
            span = json.loads(line)
            if span["trace_id"] in by_trace:
                by_trace[span["trace_id"]].append(span)
    return by_trace


def _breakdown(
    info: pb.RoundInfo, work: Sequence[NodeRound], spans: dict[str, list[dict[str, Any]]]
) -> dict[str, float]:
    """Seconds spent in each part of a round, from its trace and the coordinator's record."""
    round_spans = spans.get(work[0].trace_id, []) if work else []

    def seconds(span: dict[str, Any]) -> float:
        return float(span["end_ns"] - span["start_ns"]) / 1e9

    def named(suffix: str, service: str) -> list[dict[str, Any]]:
        return [s for s in round_spans if s["name"].endswith(suffix) and s["service"] == service]

    aggregate = named("/AggregateRound", "aggregator")
    publish = named("/PublishModel", "registry")
    opened = info.opened_unix_ms / 1000
    first_task = min(w.received for w in work)
    last_upload = max(w.finished for w in work)
    aggregate_start = min((s["start_ns"] / 1e9 for s in aggregate), default=last_upload)
    aggregate_s = sum(seconds(s) for s in aggregate)
    slowest_node = max(w.download_s + w.train_s + w.upload_s for w in work)
    wall = (info.closed_unix_ms - info.opened_unix_ms) / 1000
    return {
        "round": info.round,
        "participants": len(info.participants),
        "wall_s": wall,
        "task_delivery_s": first_task - opened,
        "download_s_max": max(w.download_s for w in work),
        "train_s_max": max(w.train_s for w in work),
        "upload_s_max": max(w.upload_s for w in work),
        "nodes_done_s": last_upload - opened,
        "close_collection_s": aggregate_start - last_upload,
        "aggregate_s": aggregate_s,
        "publish_s": sum(seconds(s) for s in publish),
        "close_round_s": info.closed_unix_ms / 1000 - (aggregate_start + aggregate_s),
        "control_plane_s": wall - slowest_node - aggregate_s,
        "spans_in_trace": len(round_spans),
    }


def scenario_c_fedmesh(scenario: Scenario, workdir: Path) -> dict[str, Any]:
    """(c) fedmesh: 10 nodes, 1M float32, nodes answering at once."""
    measured = asyncio.run(run_fedmesh(scenario, workdir))
    walls = [r.wall_s for r in measured.rounds]
    opened = measured.state.rounds[0].opened_unix_ms
    closed = measured.state.rounds[-1].closed_unix_ms
    return {
        "nodes": measured.nodes,
        "rounds": len(walls),
        "round_wall_s": [round(w, 3) for w in walls],
        "round_wall_s_median": round(_median(walls), 3),
        "seconds_per_round": round((closed - opened) / 1000 / len(walls), 3),
        "all_completed": all(r.phase == "COMPLETED" for r in measured.rounds),
    }


# ---------------------------------------------------------------- Flower


FLOWER_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fmbench"
version = "1.0.0"
description = "fedmesh bench peer: FedAvg of a float32 model, nodes reply at once"
license = "Apache-2.0"
dependencies = ["flwr>=1.42", "numpy"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedmesh"

[tool.flwr.app.components]
serverapp = "fmbench.server_app:app"
clientapp = "fmbench.client_app:app"

[tool.flwr.app.config]
num-server-rounds = 3
model-floats = 1000000
num-nodes = 10
out = ""
"""

FLOWER_CLIENT = """\
import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    update = [a * np.float32(0.999) for a in arrays]
    content = RecordDict(
        {"arrays": ArrayRecord(update), "metrics": MetricRecord({"num-examples": 100})}
    )
    return Message(content=content, reply_to=msg)
"""

FLOWER_SERVER = """\
import json
import time

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    keys = ("num-server-rounds", "model-floats", "num-nodes")
    rounds, floats, nodes = (int(cfg[k]) for k in keys)
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=nodes,
                      min_available_nodes=nodes)
    rng = np.random.default_rng(7)
    arrays = ArrayRecord([rng.standard_normal(floats, dtype=np.float32) * 0.01])
    marks = []
    for server_round in range(1, rounds + 1):
        started = time.time()
        messages = strategy.configure_train(server_round, arrays, ConfigRecord(), grid)
        replies = list(grid.send_and_receive(messages=messages, timeout=1800))
        aggregated, _ = strategy.aggregate_train(server_round, replies)
        if aggregated is not None:
            arrays = aggregated
        marks.append({"round": server_round, "seconds": time.time() - started,
                      "replies": len(replies), "aggregated": aggregated is not None})
    with open(str(cfg["out"]), "w") as out:
        json.dump(marks, out)
"""


def scenario_c_flower(nodes: int, rounds: int, floats: int, workdir: Path) -> dict[str, Any]:
    """(c) Flower's deployment engine on loopback: SuperLink, SuperNodes, `flwr run`."""
    flwr = PEER_BIN / "flwr"
    if not flwr.exists():
        return {"available": False, "reason": f"{flwr} is missing (bench/peers/.venv not set up)"}
    app, home = workdir / "app", workdir / "flwr-home"
    (app / "fmbench").mkdir(parents=True)
    home.mkdir()
    (app / "pyproject.toml").write_text(FLOWER_PYPROJECT)
    (app / "fmbench" / "__init__.py").write_text("")
    (app / "fmbench" / "client_app.py").write_text(FLOWER_CLIENT)
    (app / "fmbench" / "server_app.py").write_text(FLOWER_SERVER)
    link = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\n'
        f'address = "127.0.0.1:{link}"\ninsecure = true\n'
    )
    env = {**os.environ, "PATH": f"{PEER_BIN}:{os.environ['PATH']}", "FLWR_HOME": str(home)}
    env.pop("PYTHONPATH", None)
    processes: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, *args: str) -> None:
        with (workdir / f"{name}.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [str(PEER_BIN / args[0]), *args[1:]],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    out = workdir / "flower-rounds.json"
    try:
        spawn(
            "superlink",
            "flower-superlink",
            "--insecure",
            "--host",
            "127.0.0.1",
            "--port",
            str(link),
            "--isolation",
            "subprocess",
            "--disable-runtime-dependency-installation",
            "--database",
            str(workdir / "superlink.db"),
        )
        _wait_for_port(link, 120)
        for index in range(nodes):
            spawn(
                f"supernode-{index}",
                "flower-supernode",
                "--insecure",
                "--superlink",
                f"127.0.0.1:{link}",
                "--port",
                str(free_port()),
                "--node-config",
                f"partition-id={index}",
            )
        _wait_for_log_lines(workdir, nodes, "SuperNode ID", 180)
        started = time.perf_counter()
        config = f"num-server-rounds={rounds} num-nodes={nodes} model-floats={floats} out='{out}'"
        launched = subprocess.run(
            [str(flwr), "run", str(app), "bench", "--run-config", config],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if launched.returncode != 0:
            return {"available": False, "reason": f"flwr run failed: {launched.stderr[-500:]}"}
        deadline = time.monotonic() + 60 * rounds + 300
        while not out.exists():
            if time.monotonic() > deadline:
                return {"available": False, "reason": "the Flower run did not finish in time"}
            time.sleep(1)
        run_s = time.perf_counter() - started
        marks = json.loads(out.read_text())
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    seconds = [m["seconds"] for m in marks]
    return {
        "available": True,
        "version": _flower_version(),
        "nodes": nodes,
        "rounds": len(seconds),
        "seconds_per_round": [round(s, 2) for s in seconds],
        "seconds_per_round_median": round(_median(seconds), 2),
        "run_s_from_flwr_run": round(run_s, 1),
        "all_replied": all(m["replies"] == nodes and m["aggregated"] for m in marks),
    }


def _flower_version() -> str:
    done = subprocess.run(
        [str(PEER_BIN / "flwr"), "--version"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": ""},
    )
    return done.stdout.strip().removeprefix("Flower version: ")


def _wait_for_port(port: int, timeout_s: float) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {port} after {timeout_s} s")
        time.sleep(0.5)


def _wait_for_log_lines(workdir: Path, count: int, needle: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        ready = sum(
            1 for log in workdir.glob("supernode-*.log") if needle in log.read_text(errors="ignore")
        )
        if ready >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{ready} of {count} SuperNodes connected after {timeout_s} s")
        time.sleep(1)


# ---------------------------------------------------------------- orchestration


def child(name: str, quick: bool) -> dict[str, Any]:
    """Run one scenario in this process and return its figures."""
    table = QUICK if quick else SCENARIOS
    with tempfile.TemporaryDirectory(prefix=f"fedmesh-bench-rounds-{name}-") as tmp:
        workdir = Path(tmp)
        if name == "a":
            return scenario_a(table["a"], workdir)
        if name == "b":
            return scenario_b(table["b"], workdir)
        if name == "c-fedmesh":
            return scenario_c_fedmesh(table["c"], workdir)
        if name == "c-flower":
            load = table["c"]
            return scenario_c_flower(load.nodes, FLOWER_ROUNDS[quick], load.model_floats, workdir)
    raise ValueError(f"unknown scenario {name!r}")


def in_child(name: str, quick: bool) -> dict[str, Any]:
    """Run a scenario in a fresh Python process (its own stack, tracing and event loop)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name]
    if quick:
        command.append("--quick")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}: {done.stderr[-1500:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main() -> None:
    """Run the scenarios, print one JSON line, write bench/results/rounds.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer nodes and rounds")
    parser.add_argument("--only", default="a,b,c", help="scenarios to run: a, b, c")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.quick)), flush=True)
        return
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    result: dict[str, Any] = {
        "bench": "rounds",
        "quick": args.quick,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }
    if "a" in wanted:
        result["a_control_plane"] = in_child("a", args.quick)
    if "b" in wanted:
        result["b_breakdown"] = in_child("b", args.quick)
    if "c" in wanted:
        fedmesh = in_child("c-fedmesh", args.quick)
        flower = in_child("c-flower", args.quick)
        result["c_vs_flower"] = {"fedmesh": fedmesh, "flower": flower}
        if flower.get("available") and "seconds_per_round" in fedmesh:
            result["c_vs_flower"]["speedup_per_round"] = round(
                flower["seconds_per_round_median"] / fedmesh["seconds_per_round"], 1
            )
    print(json.dumps(result), flush=True)
    write_report(result, args)


def write_report(result: dict[str, Any], args: argparse.Namespace) -> None:
    """bench/results/rounds.md (or rounds-quick.md) from the result."""
    name = "rounds-quick.md" if args.quick else "rounds.md"
    command = "`.venv/bin/python bench/rounds.py" + (" --quick" if args.quick else "") + "`"
    lines = [
        "# Rounds: control plane, breakdown, and Flower's deployment engine",
        "",
        f"{result['machine']}, load average {result['load_average_at_start']} at the start "
        f"(the machine is shared); {command}. Figures are wall-clock seconds.",
        "",
    ]
    lines += _report_a(result.get("a_control_plane"))
    lines += _report_b(result.get("b_breakdown"))
    lines += _report_c(result.get("c_vs_flower"))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / name).write_text("\n".join(lines) + "\n")


def _report_a(a: dict[str, Any] | None) -> list[str]:
    if not a:
        return []
    if "error" in a:
        return ["## (a) control plane", "", f"Failed: {a['error']}", ""]
    rows = [
        f"| {r['round_no']} | {r['phase']} | {r['received']}/{r['participants']} | "
        f"{r['wall_s']:.3f} | {r['slowest_local_work_s']:.4f} | {r['control_plane_s']:.3f} |"
        for r in a["rounds"]
    ]
    return [
        f"## (a) control plane: {a['nodes']} nodes, a {a['model_floats']}-float model",
        "",
        f"{a['nodes']} light nodes registered in {a['registration_s']} s, each holding a "
        f"task stream and beating every 10 s; {a['selected_per_round']} selected per round.",
        "",
        "| round | phase | updates | wall s | slowest local work s | control plane s |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        f"Control plane per round: median **{a['control_plane_s_median']} s**, "
        f"max {a['control_plane_s_max']} s (target: under 5 s). It is everything but the "
        "nodes' local work: task delivery, the selected nodes' downloads and uploads of the "
        "tiny model (all light nodes share this process), quorum detection, AggregateRound "
        "with its PublishModel, and closing the round.",
        "",
    ]


def _report_b(b: dict[str, Any] | None) -> list[str]:
    if not b:
        return []
    if "error" in b:
        return ["## (b) breakdown", "", f"Failed: {b['error']}", ""]
    parts = [
        ("wall_s", "round wall time (opened → closed)"),
        ("task_delivery_s", "task delivery (opened → first node has its task)"),
        ("download_s_max", "download, slowest node"),
        ("train_s_max", "train (the node's delta and digest), slowest node"),
        ("upload_s_max", "upload, slowest node"),
        ("nodes_done_s", "opened → last update acknowledged"),
        ("close_collection_s", "last update → AggregateRound starts"),
        ("aggregate_s", "AggregateRound (rule, new model, publish)"),
        ("publish_s", "PublishModel (inside AggregateRound)"),
        ("close_round_s", "AggregateRound returns → round closed"),
        ("control_plane_s", "control plane: wall − slowest node − AggregateRound"),
    ]
    median = b["median"]
    rows = [f"| {label} | {median.get(key, float('nan')):.3f} |" for key, label in parts]
    return [
        f"## (b) breakdown: {b['nodes']} nodes, a {b['model_floats']:,}-parameter model",
        "",
        f"{b['selected_per_round']} nodes selected per round; median over "
        f"{len(b['rounds'])} rounds, from each round's trace (FEDMESH_TRACE_FILE, every "
        "span of every service and of the nodes, Redis calls included, which slows the "
        "services down).",
        "",
        "| part | seconds |",
        "| --- | ---: |",
        *rows,
        "",
        "Target: control-plane overhead under 2 s.",
        "",
    ]


def _report_c(c: dict[str, Any] | None) -> list[str]:
    if not c:
        return []
    fedmesh, flower = c["fedmesh"], c["flower"]
    lines = ["## (c) the same load through fedmesh and Flower's deployment engine", ""]
    if "error" in fedmesh:
        lines += [f"fedmesh failed: {fedmesh['error']}", ""]
    else:
        lines += [
            f"fedmesh: {fedmesh['nodes']} nodes, {fedmesh['rounds']} rounds of 1,000,000 "
            f"float32: round wall times {fedmesh['round_wall_s']} s, "
            f"**{fedmesh['seconds_per_round']} s per round** from the first round's opening "
            "to the last one's closing.",
            "",
        ]
    if flower.get("available"):
        lines += [
            f"Flower {flower['version']} deployment engine (flower-superlink, "
            f"{flower['nodes']} flower-supernode processes, subprocess isolation, on "
            f"loopback): per round {flower['seconds_per_round']} s, median "
            f"**{flower['seconds_per_round_median']} s**.",
            "",
        ]
        if "speedup_per_round" in c:
            lines += [
                f"fedmesh is **{c['speedup_per_round']}×** faster per round (target 25×).",
                "",
            ]
        lines += [
            "Where Flower's time goes (its defaults, read from its source): an idle "
            "SuperNode pulls from the SuperLink every 3 s; each SuperNode's SuperExec polls "
            "for tasks every 1 s and starts a `flwr-clientapp` process per task; replies are "
            "polled every 0.5 s. fedmesh pushes tasks on an open stream and its leader "
            "steps a run as soon as a round closes.",
            "",
        ]
    else:
        lines += [f"Flower not measured: {flower.get('reason') or flower.get('error')}", ""]
    return lines


if __name__ == "__main__":
    main()
