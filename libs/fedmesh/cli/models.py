"""``fedmesh models``: list, inspect, verify, promote, roll back and pull registry models."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from fedmesh.client.registry import RegistryClient
from fedmesh.config import CommonSettings
from fedmesh.errors import DataLoss, FedmeshError
from fedmesh.proto.common.v1 import common_pb2
from fedmesh.proto.registry.v1 import registry_pb2 as pb
from fedmesh.rpc import open_channel

app = typer.Typer(
    name="models",
    help="Model registry: versions, lineage, chain verification, promotion, downloads.",
    no_args_is_help=True,
)
console = Console()
errors = Console(stderr=True)

T = TypeVar("T")

Registry = Annotated[
    str,
    typer.Option(
        "--registry",
        envvar="FEDMESH_REGISTRY_ADDRESS",
        help="Registry address (host:port).",
        show_default=True,
    ),
]
Name = Annotated[str, typer.Argument(help="Model name.")]
VersionOption = Annotated[
    int, typer.Option("--version", "-v", help="Version number; 0 for the latest.")
]
AliasOption = Annotated[str, typer.Option("--alias", "-a", help="Alias instead of a version.")]
DEFAULT_REGISTRY = "127.0.0.1:50053"
EXIT_ERROR = 1
EXIT_TAMPERED = 2


def _call(address: str, work: Callable[[RegistryClient], Awaitable[T]]) -> T:
    async def run() -> T:
        async with open_channel(address, tls=CommonSettings.from_env().tls) as channel:
            return await work(RegistryClient(channel))

    try:
        return asyncio.run(run())
    except DataLoss as exc:
        errors.print(f"[bold red]tampering found:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_TAMPERED) from None
    except FedmeshError as exc:
        errors.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_ERROR) from None


def _rule(rule: int) -> str:
    name = common_pb2.AggregationRule.Name(common_pb2.AggregationRule.ValueType(rule))
    return "-" if rule == 0 else name.removeprefix("AGGREGATION_RULE_").lower()


def _when(unix_ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(unix_ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _f1(version: pb.ModelVersion) -> str:
    return f"{version.evaluation.macro_f1:.4f}" if version.HasField("evaluation") else "-"


def _run_round(version: pb.ModelVersion) -> str:
    return f"{version.run_id}/{version.round}" if version.run_id else "-"


def _versions_table(title: str, versions: list[pb.ModelVersion]) -> Table:
    table = Table(title=escape(title))
    columns = ("Version", "Digest", "Parent", "Run/round", "Rule", "ε", "Macro-F1", "Aliases")
    for column in (*columns, "Created (UTC)", "Blob"):
        table.add_column(column)
    for v in versions:
        table.add_row(
            str(v.ref.version),
            v.ref.digest[:12],
            str(v.parent_version or "-"),
            escape(_run_round(v)),
            _rule(v.rule),
            f"{v.epsilon_spent:.3f}",
            _f1(v),
            ", ".join(v.aliases),
            _when(v.created_unix_ms),
            "dropped" if v.blob_deleted else "kept",
        )
    return table


@app.command()
def init(
    name: Name,
    seed: int = typer.Option(0, help="Seed of the initial weights."),
    registry: Registry = DEFAULT_REGISTRY,
) -> None:
    """Publish a freshly initialised GraphSAGE detector as the first version of NAME."""
    import torch

    from fedmesh.model import AnomalyDetector

    torch.manual_seed(seed)
    weights = AnomalyDetector().state_dict()
    version = _call(registry, lambda c: c.publish_tensors(name, weights))
    console.print(
        f"Published {escape(name)} version {version.ref.version} "
        f"(digest {version.ref.digest[:12]}); start a run on it with fedmesh run start"
    )


@app.command("list")
def list_models(
    name: Annotated[str, typer.Argument(help="A model name to list its versions.")] = "",
    limit: Annotated[int, typer.Option(help="Versions per page.")] = 20,
    page_token: Annotated[str, typer.Option(help="Continue a listing.")] = "",
    registry: Registry = DEFAULT_REGISTRY,
) -> None:
    """List models, or the versions of one model (newest first)."""
    if not name:
        summaries = _call(registry, lambda c: c.list_models())
        table = Table(title="Models")
        for column in ("Name", "Latest", "Production", "Candidate", "Other aliases"):
            table.add_column(column)
        for s in summaries:
            aliases = dict(s.aliases)
            production, candidate = aliases.pop("production", 0), aliases.pop("candidate", 0)
            table.add_row(
                escape(s.name),
                str(s.latest_version),
                str(production or "-"),
                str(candidate or "-"),
                ", ".join(f"{a}={v}" for a, v in sorted(aliases.items())),
            )
        console.print(table)
        return
    page = _call(registry, lambda c: c.list_versions(name, limit, page_token))
    console.print(_versions_table(f"Versions of {name}", page.versions))
    if page.next_page_token:
        console.print(f"more: --page-token {page.next_page_token}")


@app.command()
def show(
    name: Name,
    version: VersionOption = 0,
    alias: AliasOption = "",
    registry: Registry = DEFAULT_REGISTRY,
) -> None:
    """Everything recorded about one version."""
    v = _call(registry, lambda c: c.get_version(name, version, alias))
    table = Table(title=escape(f"{name} version {v.ref.version}"), show_header=False)
    table.add_column("Field", style="bold")
    table.add_column("Value")
    rows = [
        ("digest", v.ref.digest),
        ("size", f"{v.size_bytes} bytes"),
        ("tensors", ", ".join(f"{t.name} {t.dtype}{list(t.shape)}" for t in v.manifest.tensors)),
        ("parent", str(v.parent_version or "-")),
        ("run/round", _run_round(v)),
        ("rule", _rule(v.rule)),
        ("participants", "\n".join(v.participant_update_digests) or "-"),
        ("rejected", "\n".join(f"{r.node_id}: {r.reason}" for r in v.rejected) or "-"),
        ("ε spent / δ", f"{v.epsilon_spent} / {v.delta}"),
        ("macro-F1", _f1(v)),
        ("aliases", ", ".join(v.aliases) or "-"),
        ("created (UTC)", _when(v.created_unix_ms)),
        ("blob", "dropped by retention" if v.blob_deleted else "kept"),
        ("previous record", v.previous_digest or "- (first version)"),
        ("record digest", v.record_digest),
        ("signed by", v.signer_key_id),
    ]
    if v.HasField("evaluation"):
        e = v.evaluation
        rows.append(
            (
                "evaluation",
                f"loss {e.loss:.4f}, PR-AUC {e.pr_auc:.4f}, {e.samples} samples "
                f"from {e.reporters} nodes",
            )
        )
    for field, value in rows:
        table.add_row(field, escape(value))
    console.print(table)


@app.command()
def lineage(name: Name, version: VersionOption = 0, registry: Registry = DEFAULT_REGISTRY) -> None:
    """A version and its ancestors back to the first one."""
    line = _call(registry, lambda c: c.lineage(name, version))
    console.print(_versions_table(f"Lineage of {name} version {line[0].ref.version}", line))


@app.command()
def verify(name: Name, version: VersionOption = 0, registry: Registry = DEFAULT_REGISTRY) -> None:
    """Re-check records, signatures, links and blobs back to version 1 (exit 2 on tampering)."""
    report = _call(registry, lambda c: c.verify_chain(name, version))
    console.print(
        f"[green]chain of {name} intact[/]: {report.versions_checked} versions, "
        f"{report.blobs_checked} blobs re-hashed; head record {report.head_digest}"
    )


@app.command()
def promote(
    name: Name,
    version: Annotated[int, typer.Argument(help="The version to promote.")],
    alias: Annotated[str, typer.Option(help="The alias to move.")] = "production",
    reason: Annotated[str, typer.Option(help="Why (kept in the history).")] = "",
    registry: Registry = DEFAULT_REGISTRY,
) -> None:
    """Point an alias at a version; production must pass the evaluation gate."""
    v = _call(registry, lambda c: c.promote(name, version, alias, reason))
    console.print(f"{name}: {alias} → version {v.ref.version} (macro-F1 {_f1(v)})")


@app.command()
def rollback(
    name: Name,
    version: Annotated[
        int, typer.Argument(help="Earlier version; 0 for the previous production.")
    ] = 0,
    reason: Annotated[str, typer.Option(help="Why (kept in the history).")] = "",
    registry: Registry = DEFAULT_REGISTRY,
) -> None:
    """Move production back to an earlier version."""
    v = _call(registry, lambda c: c.rollback(name, version, reason))
    console.print(f"{name}: production rolled back to version {v.ref.version}")


@app.command()
def history(
    name: Name,
    alias: Annotated[str, typer.Option(help="Only this alias.")] = "",
    registry: Registry = DEFAULT_REGISTRY,
) -> None:
    """Every recorded alias move, newest first."""
    moves = _call(registry, lambda c: c.alias_moves(name, alias))
    table = Table(title=escape(f"Alias moves of {name}"))
    for column in ("When (UTC)", "Alias", "From", "To", "Action", "Reason"):
        table.add_column(column)
    for m in moves:
        table.add_row(
            _when(m.moved_unix_ms),
            m.alias,
            str(m.from_version or "-"),
            str(m.to_version),
            pb.AliasAction.Name(m.action).removeprefix("ALIAS_ACTION_").lower(),
            escape(m.reason),
        )
    console.print(table)


@app.command()
def pull(
    name: Name,
    destination: Annotated[Path, typer.Argument(help="File to write the safetensors to.")],
    version: VersionOption = 0,
    alias: AliasOption = "",
    registry: Registry = DEFAULT_REGISTRY,
) -> None:
    """Download a version to a file (resumable; the digest is checked before it lands)."""
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(f"{name}", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        result = _call(
            registry,
            lambda c: c.download_to(destination, name, version, alias, on_progress=advance),
        )
    resumed = f", resumed at byte {result.resumed_from}" if result.resumed_from else ""
    console.print(
        f"{name} version {result.version.ref.version} → {result.path} "
        f"({result.version.size_bytes} bytes, sha256 {result.version.ref.digest}{resumed})"
    )
