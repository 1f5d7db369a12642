"""`fedmesh demo`: a federated training run of the detector on the local stack."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedmesh.cli.report import RoundRow, write_report
from fedmesh.cli.stack import LocalStack
from fedmesh.client.agent import NodeAgent
from fedmesh.client.alerting import Alert, AlertingClient, AlertState
from fedmesh.client.coordinator import CoordinatorClient
from fedmesh.client.local_data import LocalData, simulated_clients
from fedmesh.client.registry import RegistryClient
from fedmesh.client.signing import NodeSigner, load_or_create_signing_key
from fedmesh.client.transfers import ModelTransfers
from fedmesh.client.watch import AnomalyWatch
from fedmesh.errors import FedmeshError
from fedmesh.mesh import FaultRates, MeshConfig
from fedmesh.model import AnomalyDetector
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.proto.coordinator.v1 import coordinator_pb2 as pb
from fedmesh.rpc import open_channel
from fedmesh.stopping import stop

MODEL_NAME = "mesh-detector"


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs: a mesh, its clients, and the run's spec."""

    workdir: Path
    report_dir: Path
    nodes: int = 8
    rounds: int = 5
    mesh_nodes: int = 200
    steps: int = 160
    # Faults start 6× more often than the simulator's default, so that every region's
    # short held-out window holds fault instances to detect.
    fault_onset_rate: float = 3e-3
    local_epochs: int = 2
    learning_rate: float = 1e-3
    seed: int = 7
    collect_deadline_s: float = 60.0
    secure_aggregation: bool = False

    def mesh(self) -> MeshConfig:
        """The simulated mesh."""
        return MeshConfig(
            num_nodes=self.mesh_nodes, faults=FaultRates(onset_rate=self.fault_onset_rate)
        )


class NodeFleet:
    """The simulated nodes, each an agent with its own channels, in this process."""

    def __init__(
        self,
        stack: LocalStack,
        clients: list[LocalData],
        seed: int,
        watch_interval_s: float = 0.5,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        self._stack = stack
        self._interceptors = interceptors
        self._clients = clients
        self._seed = seed
        self._watch_interval_s = watch_interval_s
        self._tasks: list[asyncio.Task[None]] = []
        self._closers: list[ModelTransfers] = []
        self._channels: list[grpc.aio.Channel] = []
        self.watches: list[AnomalyWatch] = []
        self.signers: dict[str, NodeSigner] = {}

    async def start(self) -> None:
        """Start one agent per client, each scoring its telemetry with the production model."""
        for index, data in enumerate(self._clients):
            address = {name: svc.address for name, svc in self._stack.services.items()}
            wire = self._interceptors
            coordinator = open_channel(address["coordinator"], interceptors=wire)
            registry = open_channel(address["registry"], default_timeout=120, interceptors=wire)
            alerting = open_channel(address["alerting"], interceptors=wire)
            registry_client = RegistryClient(registry)
            transfers = ModelTransfers(registry_client, interceptors=wire)
            watch = AnomalyWatch(
                data, registry_client, AlertingClient(alerting), MODEL_NAME, self._watch_interval_s
            )
            node_id = f"node-{index}"
            # Kept in the stack's directory like a real node's key file: the coordinator
            # holds a node id to its first key, so a later fleet on this stack reuses it.
            key_file = self._stack.workdir / "node-keys" / f"{node_id}.ed25519.pem"
            key_file.parent.mkdir(mode=0o700, exist_ok=True)
            self.signers[node_id] = await asyncio.to_thread(load_or_create_signing_key, key_file)
            agent = NodeAgent(
                node_id,
                data,
                CoordinatorClient(coordinator),
                transfers,
                self.signers[node_id],
                seed=self._seed + index,
                watch=watch,
            )
            self.watches.append(watch)
            self._channels.extend([coordinator, registry, alerting])
            self._closers.append(transfers)
            self._tasks.append(asyncio.create_task(agent.run(), name=f"agent-{index}"))

    async def stop(self) -> None:
        """Cancel the agents (again while one still runs) and close their channels."""
        await asyncio.gather(*(stop(task) for task in self._tasks))
        for transfers in self._closers:
            await transfers.close()
        for channel in self._channels:
            await channel.close()


async def _wait_for_nodes(coordinator: CoordinatorClient, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = await coordinator.list_nodes()
        online = [n for n in nodes if n.state == pb.NODE_STATE_ONLINE]
        if len(online) >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(online)} of {count} nodes registered in {timeout_s} s")
        await asyncio.sleep(0.2)


def rows_of(
    run: pb.GetRunResponse, initial: tuple[int, common.EvaluationMetrics] | None
) -> list[RoundRow]:
    """The table rows of a run: round 0 is the initial model's evaluation."""
    rows: list[RoundRow] = []
    if initial is not None and initial[1].reporters:
        version, metrics = initial
        rows.append(
            RoundRow(
                round=0,
                phase="INITIAL",
                participants=0,
                received=0,
                mean_local_loss=None,
                held_out_macro_f1=metrics.macro_f1,
                held_out_pr_auc=metrics.pr_auc,
                evaluated_by=metrics.reporters,
                model_version=version,
                seconds=None,
                failure_reason="",
            )
        )
    for info in run.rounds:
        evaluated = info.HasField("evaluation") and info.evaluation.reporters > 0
        done = info.closed_unix_ms > 0
        rows.append(
            RoundRow(
                round=info.round,
                phase=pb.RoundPhase.Name(info.phase).removeprefix("ROUND_PHASE_"),
                participants=len(info.participants),
                received=len(info.received),
                mean_local_loss=info.mean_local_loss if info.HasField("result_model") else None,
                held_out_macro_f1=info.evaluation.macro_f1 if evaluated else None,
                held_out_pr_auc=info.evaluation.pr_auc if evaluated else None,
                evaluated_by=info.evaluation.reporters if evaluated else 0,
                model_version=info.result_model.version if info.HasField("result_model") else None,
                seconds=(info.closed_unix_ms - info.opened_unix_ms) / 1000 if done else None,
                failure_reason=info.failure_reason,
            )
        )
    return rows


def table_of(rows: list[RoundRow]) -> Table:
    """A rich table of the rounds."""
    table = Table(title="fedmesh demo: FedAvg of the GraphSAGE detector")
    for column in ("round", "phase", "participants", "mean local loss", "held-out macro-F1",
                   "model version", "seconds"):  # fmt: skip
        table.add_column(column, justify="right")

    def fmt(value: float | None, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    for r in rows:
        table.add_row(
            str(r.round),
            r.phase if not r.failure_reason else f"{r.phase}: {r.failure_reason}",
            f"{r.received}/{r.participants}" if r.participants else "–",
            fmt(r.mean_local_loss, ".4f"),
            fmt(r.held_out_macro_f1, ".3f"),
            "–" if r.model_version is None else str(r.model_version),
            fmt(r.seconds, ".1f"),
        )
    return table


async def _initial_evaluation(
    registry: RegistryClient, version: int
) -> tuple[int, common.EvaluationMetrics]:
    record = await registry.get_version(MODEL_NAME, version=version)
    return version, record.evaluation


async def _publish_initial_model(registry: RegistryClient, seed: int) -> int:
    import torch

    torch.manual_seed(seed)
    model = AnomalyDetector()
    version = await registry.publish_tensors(MODEL_NAME, model.state_dict())
    return int(version.ref.version)


async def run_demo(settings: DemoSettings, stack: LocalStack, console: Console) -> int:
    """Run the demo on a started stack; returns the process exit code."""
    import torch

    # Eight agents train side by side in this process: one intra-op thread each keeps
    # them from fighting over the cores (the detector is small; threads only add overhead).
    torch.set_num_threads(1)
    with console.status("Simulating the mesh and splitting it into regions…"):
        _, clients = await asyncio.to_thread(
            simulated_clients, settings.mesh(), settings.nodes, settings.steps, settings.seed
        )
    registry_channel = open_channel(stack.services["registry"].address, default_timeout=120)
    coordinator_channel = open_channel(stack.services["coordinator"].address)
    registry = RegistryClient(registry_channel)
    coordinator = CoordinatorClient(coordinator_channel)
    fleet = NodeFleet(stack, clients, settings.seed)
    try:
        initial_version = await _publish_initial_model(registry, settings.seed)
        await fleet.start()
        with console.status(f"Waiting for {settings.nodes} nodes to register…"):
            await _wait_for_nodes(coordinator, settings.nodes, 60)
        run = await coordinator.start_run(_spec(settings))
        console.print(f"Started run [bold]{run.run_id}[/bold] from model version {initial_version}")
        final = await _follow(coordinator, run.run_id, settings, console)
        final = await _await_final_evaluation(coordinator, run.run_id, final)
        rows = rows_of(final, await _initial_evaluation(registry, initial_version))
        alerts = await _detect(registry, stack, final.run.model.version, console)
    finally:
        await fleet.stop()
        await registry_channel.close()
        await coordinator_channel.close()
    console.print(table_of(rows))
    console.print(alerts_table(alerts))
    failed = [r for r in rows if r.phase == "FAILED"]
    summary: dict[str, object] = {
        "run_id": final.run.run_id,
        "status": pb.RunStatus.Name(final.run.status),
        "rounds_completed": final.run.rounds_completed,
        "rounds_failed": final.run.rounds_failed,
        "final_model_version": final.run.model.version,
        "anomaly_alerts": {
            severity: sum(1 for a in alerts if a.severity.value == severity)
            for severity in ("critical", "high", "medium")
        },
    }
    paths = write_report(rows, summary, settings.report_dir)
    console.print("Report: " + ", ".join(str(p) for p in paths))
    return 1 if failed or final.run.status != pb.RUN_STATUS_COMPLETED else 0


def _spec(settings: DemoSettings) -> pb.RunSpec:
    return pb.RunSpec(
        model_name=MODEL_NAME,
        aggregation=common.AggregationSpec(rule=common.AGGREGATION_RULE_FEDAVG),
        rounds=settings.rounds,
        min_participants=3,
        target_participants=settings.nodes,
        over_selection=0.0,
        collect_deadline_s=settings.collect_deadline_s,
        aggregate_deadline_s=30.0,
        seed=settings.seed,
        training=common.TrainingSpec(
            local_epochs=settings.local_epochs, learning_rate=settings.learning_rate
        ),
        secure_aggregation=common.SecureAggregationSpec(enabled=settings.secure_aggregation),
    )


async def _follow(
    coordinator: CoordinatorClient, run_id: str, settings: DemoSettings, console: Console
) -> pb.GetRunResponse:
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total} rounds"), TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("Federated rounds", total=settings.rounds)
        while True:
            state = await coordinator.get_run(run_id)
            closed = state.run.rounds_completed + state.run.rounds_failed
            phase = pb.RoundPhase.Name(state.run.phase).removeprefix("ROUND_PHASE_")
            progress.update(
                bar,
                completed=closed,
                description=f"Round {state.run.current_round} {phase.lower()}",
            )
            if state.run.status != pb.RUN_STATUS_RUNNING:
                return state
            await asyncio.sleep(0.5)


async def _await_final_evaluation(
    coordinator: CoordinatorClient, run_id: str, state: pb.GetRunResponse, timeout_s: float = 60
) -> pb.GetRunResponse:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = [r for r in state.rounds if r.HasField("result_model")]
        if not done or done[-1].evaluation.reporters > 0:
            return state
        await asyncio.sleep(0.5)
        state = await coordinator.get_run(run_id)
    return state


async def _detect(
    registry: RegistryClient, stack: LocalStack, version: int, console: Console, wait_s: float = 8
) -> list[Alert]:
    """Promote the final model to production and collect the anomaly alerts nodes raise."""
    try:
        await registry.promote(MODEL_NAME, version, reason="demo: final federated model")
    except FedmeshError as exc:
        console.print(f"[yellow]final model not promoted: {exc}[/yellow]")
        return []
    with console.status(f"Nodes score their telemetry with v{version} in production…"):
        await asyncio.sleep(wait_s)
    async with open_channel(stack.services["alerting"].address) as channel:
        alerts = await AlertingClient(channel).list_alerts(state=AlertState.FIRING)
    return [a for a in alerts if a.name == "NodeAnomaly"]


def alerts_table(alerts: list[Alert]) -> Table:
    """Anomaly alerts per region and severity."""
    table = Table(title="Anomaly alerts raised by the nodes (production model)")
    for column in ("region", "critical", "high", "medium", "nodes"):
        table.add_column(column, justify="right")
    regions = sorted({a.labels.get("region", "") for a in alerts})
    for region in regions:
        mine = [a for a in alerts if a.labels.get("region", "") == region]
        counts = [
            sum(1 for a in mine if a.severity.value == s) for s in ("critical", "high", "medium")
        ]
        nodes = sorted({a.labels.get("node", "") for a in mine})
        shown = ", ".join(nodes[:4]) + (f" +{len(nodes) - 4}" if len(nodes) > 4 else "")
        table.add_row(region, *(str(c) for c in counts), shown)
    return table
