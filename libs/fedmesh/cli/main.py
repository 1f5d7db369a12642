"""The `fedmesh` command."""

from __future__ import annotations

import asyncio
import importlib
import signal
import tempfile
from pathlib import Path

import typer
from rich.console import Console

from fedmesh.cli import alerts, certs, models, runs
from fedmesh.cli.node import node
from fedmesh.cli.stack import SERVICES, LocalStack

app = typer.Typer(
    help="fedmesh: federated learning for a self-healing wireless mesh.", no_args_is_help=True
)
app.add_typer(runs.app, name="run")
app.add_typer(models.app, name="models")
app.add_typer(alerts.app, name="alerts")
app.add_typer(certs.app, name="certs")
app.command()(node)
console = Console()


@app.command()
def demo(
    rounds: int = typer.Option(5, min=1, help="Federated rounds."),
    nodes: int = typer.Option(8, min=3, help="Simulated nodes (federated clients)."),
    report_dir: Path = typer.Option(Path("fedmesh-demo"), help="Where the report goes."),
    seed: int = typer.Option(7, help="Seed of the mesh, the split and the training."),
    secure_aggregation: bool = typer.Option(
        False,
        "--secure-aggregation",
        help="Mask the updates with SecAgg+: the aggregator sees only their sum.",
    ),
) -> None:
    """Start Redis and the four services, run simulated nodes through FedAvg rounds."""
    from fedmesh.cli.demo import DemoSettings, run_demo

    with tempfile.TemporaryDirectory(prefix="fedmesh-demo-") as tmp:
        settings = DemoSettings(
            workdir=Path(tmp),
            report_dir=report_dir,
            nodes=nodes,
            rounds=rounds,
            seed=seed,
            secure_aggregation=secure_aggregation,
        )
        stack = LocalStack(settings.workdir)
        signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            with console.status("Starting Redis and the four services…"):
                stack.start()
            console.print(
                "Stack up: "
                + ", ".join(f"{n} {s.address}" for n, s in stack.services.items())
                + f", redis {stack.redis_url}"
            )
            code = asyncio.run(run_demo(settings, stack, console))
        except KeyboardInterrupt:
            console.print("[yellow]Interrupted; tearing the stack down.[/yellow]")
            code = 130
        finally:
            stack.stop()
    raise typer.Exit(code)


@app.command()
def serve(name: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}.")) -> None:
    """Run one service in the foreground (configured by FEDMESH_* variables)."""
    if name not in SERVICES:
        console.print(f"[red]unknown service {name!r}; expected one of {', '.join(SERVICES)}[/red]")
        raise typer.Exit(2)
    module = importlib.import_module(f"fedmesh.services.{name}.server")
    module.main()


@app.command()
def up(
    workdir: Path = typer.Option(Path(".fedmesh"), help="Logs, blobs, spool, Redis AOF."),
) -> None:
    """Start the local stack and keep it up until Ctrl-C."""
    stack = LocalStack(workdir.resolve())
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with console.status("Starting Redis and the four services…"):
            stack.start()
        for name, svc in stack.services.items():
            console.print(f"{name:<12} {svc.address}   log {svc.log_path}")
        console.print(f"{'redis':<12} {stack.redis_url}")
        console.print("Export these as FEDMESH_<NAME>_ADDRESS for the CLI. Ctrl-C stops.")
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """Console entry point."""
    app()
