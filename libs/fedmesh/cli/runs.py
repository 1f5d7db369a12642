"""`fedmesh run …`: start, follow, list and stop federated runs."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
import typer
from rich.console import Console
from rich.table import Table

from fedmesh.client.coordinator import CoordinatorClient
from fedmesh.config import CommonSettings
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.proto.coordinator.v1 import coordinator_pb2 as pb
from fedmesh.rpc import open_channel

app = typer.Typer(help="Start, inspect and stop federated runs.")
console = Console()
T = TypeVar("T")

ADDRESS = typer.Option(
    os.environ.get("FEDMESH_COORDINATOR_ADDRESS", "127.0.0.1:50051"),
    "--coordinator",
    help="Coordinator address (FEDMESH_COORDINATOR_ADDRESS).",
)


def _call(address: str, action: Callable[[CoordinatorClient], Awaitable[T]]) -> T:
    async def run() -> T:
        async with open_channel(address, tls=CommonSettings.from_env().tls) as channel:
            return await action(CoordinatorClient(channel))

    try:
        return asyncio.run(run())
    except grpc.aio.AioRpcError as exc:
        console.print(f"[red]{exc.code().name}: {exc.details()}[/red]")
        raise typer.Exit(1) from None


def _runs_table(runs: list[pb.RunInfo]) -> Table:
    table = Table(title="Runs")
    for column in ("run", "status", "model", "round", "phase", "completed", "failed", "ε spent"):
        table.add_column(column)
    for run in runs:
        table.add_row(
            run.run_id,
            pb.RunStatus.Name(run.status).removeprefix("RUN_STATUS_"),
            f"{run.model.name} v{run.model.version}",
            str(run.current_round),
            pb.RoundPhase.Name(run.phase).removeprefix("ROUND_PHASE_"),
            str(run.rounds_completed),
            str(run.rounds_failed),
            _epsilon(run),
        )
    return table


def _epsilon(run: pb.RunInfo) -> str:
    privacy = run.spec.privacy
    if not privacy.enabled:
        return "–"
    return f"{run.epsilon_spent:.3f} of {privacy.epsilon_budget:g} (δ {privacy.delta:g})"


@app.command()
def start(
    model: str = typer.Option(..., help="Model name in the registry."),
    rule: str = typer.Option("fedavg", help="fedavg, krum, multi_krum, median, trimmed_mean, …"),
    byzantine_f: int = typer.Option(0, help="Byzantine updates the rule must tolerate."),
    rounds: int = typer.Option(5, min=1),
    min_participants: int = typer.Option(3, min=1),
    target_participants: int = typer.Option(10, min=1),
    collect_deadline_s: float = typer.Option(60.0),
    dp: bool = typer.Option(False, "--dp", help="Node-level differential privacy."),
    clip_norm: float = typer.Option(1.0, help="DP: L2 bound C of each update."),
    noise_multiplier: float = typer.Option(1.1, help="DP: z, the noise is N(0, (z·C)²)."),
    delta: float = typer.Option(1e-5, help="DP: δ."),
    epsilon_budget: float = typer.Option(1.0, help="DP: the run's ε budget."),
    sampling_rate: float = typer.Option(
        0.0, help="DP: Poisson rate q of node selection; 0 selects as usual, counted as q = 1."
    ),
    secure: bool = typer.Option(
        False, "--secure-aggregation", help="SecAgg+: the aggregator sees only sums."
    ),
    secagg_threshold: int = typer.Option(0, help="SecAgg+: Shamir t (0: majority of k)."),
    secagg_neighbours: int = typer.Option(0, help="SecAgg+: k (0: O(log n))."),
    secagg_bucket_size: int = typer.Option(0, help="SecAgg+: nodes per bucket (0: one bucket)."),
    secagg_min_survivors: int = typer.Option(0, help="SecAgg+: fewest inputs per sum (0: t)."),
    secagg_clip_range: float = typer.Option(0.0, help="SecAgg+: per-coordinate range (0: 1.0)."),
    address: str = ADDRESS,
) -> None:
    """Start a run (StartRun refuses impossible or unaffordable settings and says why)."""
    name = f"AGGREGATION_RULE_{rule.upper()}"
    names = list(common.AggregationRule.keys())
    if name not in names or rule.upper() == "UNSPECIFIED":
        known = [k.removeprefix("AGGREGATION_RULE_").lower() for k in names]
        console.print(f"[red]unknown rule {rule!r}; expected one of {', '.join(known[1:])}[/red]")
        raise typer.Exit(2)
    enum = common.AggregationRule.Value(name)
    spec = pb.RunSpec(
        model_name=model,
        aggregation=common.AggregationSpec(rule=enum, byzantine_f=byzantine_f),
        rounds=rounds,
        min_participants=min_participants,
        target_participants=target_participants,
        collect_deadline_s=collect_deadline_s,
        privacy=common.PrivacySpec(
            enabled=dp,
            clip_norm=clip_norm,
            noise_multiplier=noise_multiplier,
            delta=delta,
            epsilon_budget=epsilon_budget,
            sampling_rate=sampling_rate,
        )
        if dp
        else None,
        secure_aggregation=common.SecureAggregationSpec(
            enabled=True,
            threshold=secagg_threshold,
            neighbours=secagg_neighbours,
            bucket_size=secagg_bucket_size,
            min_survivors=secagg_min_survivors,
            clip_range=secagg_clip_range,
        )
        if secure
        else None,
    )
    run = _call(address, lambda c: c.start_run(spec))
    console.print(_runs_table([run]))


@app.command("list")
def list_runs(address: str = ADDRESS) -> None:
    """The newest runs."""
    console.print(_runs_table(_call(address, lambda c: c.list_runs())))


@app.command()
def status(run_id: str, address: str = ADDRESS) -> None:
    """One run and its rounds."""
    response = _call(address, lambda c: c.get_run(run_id))
    console.print(_runs_table([response.run]))
    table = Table(title=f"Rounds of {run_id}")
    for column in ("round", "phase", "received", "excluded", "model", "macro-F1", "reason"):
        table.add_column(column)
    for info in response.rounds:
        table.add_row(
            str(info.round),
            pb.RoundPhase.Name(info.phase).removeprefix("ROUND_PHASE_"),
            f"{len(info.received)}/{len(info.participants)}",
            ", ".join(e.node_id for e in info.excluded) or "–",
            f"v{info.result_model.version}" if info.HasField("result_model") else "–",
            f"{info.evaluation.macro_f1:.3f}" if info.evaluation.reporters else "–",
            info.failure_reason or "",
        )
    console.print(table)


@app.command()
def stop(run_id: str, reason: str = typer.Option("", help="Why."), address: str = ADDRESS) -> None:
    """Stop a run; its open round fails with the reason."""
    console.print(_runs_table([_call(address, lambda c: c.stop_run(run_id, reason))]))
