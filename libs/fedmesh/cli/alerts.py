"""`fedmesh alerts …`: list, watch, silence and acknowledge alerts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from typing import Annotated, TypeVar

import grpc
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fedmesh.client.alerting import (
    WATCH_TIMEOUT_S,
    Alert,
    AlertingClient,
    AlertState,
    Severity,
    Silence,
)
from fedmesh.config import CommonSettings
from fedmesh.errors import InvalidArgument
from fedmesh.rpc import open_channel

app = typer.Typer(help="Alerts: list, watch, silence, acknowledge.", no_args_is_help=True)
silence_app = typer.Typer(help="Silences: add, list, expire.", no_args_is_help=True)
app.add_typer(silence_app, name="silence")
console = Console()
T = TypeVar("T")

ADDRESS = typer.Option(
    "127.0.0.1:50054",
    "--alerting",
    envvar="FEDMESH_ALERTING_ADDRESS",
    help="Alerting service address (FEDMESH_ALERTING_ADDRESS).",
)
SEVERITY_STYLE = {
    Severity.CRITICAL: "bold red",
    Severity.HIGH: "red",
    Severity.MEDIUM: "yellow",
    Severity.INFO: "cyan",
}
STATE_STYLE = {AlertState.FIRING: "red", AlertState.SUPPRESSED: "dim", AlertState.RESOLVED: "green"}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]{escape(message)}[/red]")
    return typer.Exit(code)


def _call(address: str, action: Callable[[AlertingClient], Awaitable[T]]) -> T:
    try:
        tls = CommonSettings.from_env().tls
    except InvalidArgument as exc:
        raise _fail(str(exc)) from None

    async def run() -> T:
        async with open_channel(address, tls=tls) as channel:
            return await action(AlertingClient(channel))

    try:
        return asyncio.run(run())
    except grpc.aio.AioRpcError as exc:
        raise _fail(f"{exc.code().name}: {exc.details()}", 1) from None


def _severity(text: str | None) -> Severity | None:
    if text is None:
        return None
    try:
        return Severity(text.lower())
    except ValueError:
        raise _fail(
            f"unknown severity {text!r}; expected {', '.join(s.value for s in Severity)}"
        ) from None


def _state(text: str | None) -> AlertState | None:
    if text is None:
        return None
    try:
        return AlertState(text.lower())
    except ValueError:
        raise _fail(
            f"unknown state {text!r}; expected {', '.join(s.value for s in AlertState)}"
        ) from None


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise _fail(f"malformed label {pair!r}; expected name=value")
        labels[name] = value
    return labels


def parse_duration_s(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``30m``, ``2h`` or ``1d``; ValueError otherwise."""
    found = _DURATION.match(text.strip())
    if found is None:
        raise ValueError(f"malformed duration {text!r}; expected e.g. 90s, 30m, 2h, 1d")
    return float(found.group(1)) * _UNIT_S[found.group(2)]


def _age(unix_ms: int) -> str:
    seconds = max(0, int(time.time() - unix_ms / 1000))
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _other_labels(labels: Mapping[str, str]) -> str:
    return " ".join(
        f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("alertname", "severity")
    )


def alerts_table(alerts: list[Alert]) -> Table:
    """Alerts as a rich table."""
    table = Table(title=f"Alerts ({len(alerts)})")
    for column in (
        "fingerprint",
        "severity",
        "state",
        "alert",
        "labels",
        "summary",
        "count",
        "age",
    ):
        table.add_column(column, overflow="fold")
    table.add_column("ack")
    for alert in alerts:
        table.add_row(
            alert.fingerprint,
            f"[{SEVERITY_STYLE[alert.severity]}]{alert.severity.value}[/]",
            f"[{STATE_STYLE[alert.state]}]{alert.state.value}[/]",
            escape(alert.name),
            escape(_other_labels(alert.labels)),
            escape(alert.annotations.get("summary", "")),
            str(alert.count),
            _age(alert.starts_unix_ms),
            escape(alert.acknowledged_by),
        )
    return table


def silences_table(silences: list[Silence]) -> Table:
    """Silences as a rich table."""
    table = Table(title=f"Silences ({len(silences)})")
    for column in ("id", "matchers", "ends", "by", "comment", "state"):
        table.add_column(column, overflow="fold")
    for silence in silences:
        ends = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(silence.ends_unix_ms / 1000))
        table.add_row(
            silence.id,
            escape(", ".join(silence.matchers)),
            ends,
            escape(silence.created_by),
            escape(silence.comment),
            "[dim]expired[/]" if silence.expired else "[yellow]active[/]",
        )
    return table


@app.command("list")
def list_alerts(
    state: str | None = typer.Option(None, help="firing, suppressed or resolved."),
    severity: str | None = typer.Option(
        None, help="Minimum severity: info, medium, high, critical."
    ),
    label: Annotated[
        list[str] | None,
        typer.Option(help="Only alerts with this label (name=value); repeatable."),
    ] = None,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    address: str = ADDRESS,
) -> None:
    """List alerts, worst and newest first."""
    wanted_state, wanted_severity, labels = _state(state), _severity(severity), _labels(label or [])
    alerts = _call(
        address,
        lambda c: c.list_alerts(state=wanted_state, min_severity=wanted_severity, labels=labels),
    )
    if as_json:
        console.print_json(json.dumps([asdict(a) for a in alerts], default=str))
    else:
        console.print(alerts_table(alerts))


@app.command()
def watch(
    severity: str | None = typer.Option(
        None, help="Minimum severity: info, medium, high, critical."
    ),
    for_: str | None = typer.Option(None, "--for", help="Stop after this long: 90s, 30m, 2h."),
    address: str = ADDRESS,
) -> None:
    """Print the firing alerts, then every change as it happens (Ctrl-C stops)."""
    minimum = _severity(severity)
    try:
        limit_s = parse_duration_s(for_) if for_ else WATCH_TIMEOUT_S
    except ValueError as exc:
        raise _fail(str(exc)) from None

    async def follow(client: AlertingClient) -> None:
        try:
            async for alert in client.watch(min_severity=minimum, timeout_s=limit_s):
                stamp = time.strftime("%H:%M:%S")
                console.print(
                    f"{stamp} [{STATE_STYLE[alert.state]}]{alert.state.value:<10}[/] "
                    f"[{SEVERITY_STYLE[alert.severity]}]{alert.severity.value:<8}[/] "
                    f"{escape(alert.name)} {escape(_other_labels(alert.labels))} "
                    f"x{alert.count} {alert.fingerprint}"
                )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise

    with contextlib.suppress(KeyboardInterrupt):
        _call(address, follow)


@app.command()
def ack(
    fingerprint: str = typer.Argument(..., help="The alert's fingerprint (see `alerts list`)."),
    by: str = typer.Option(..., help="Who handles it."),
    address: str = ADDRESS,
) -> None:
    """Acknowledge a firing alert."""
    alert = _call(address, lambda c: c.acknowledge(fingerprint, by=by))
    console.print(f"acknowledged {alert.fingerprint} ({escape(alert.name)}) by {escape(by)}")


@app.command()
def status(address: str = ADDRESS) -> None:
    """Alert counts, sinks' health and the rule file in use."""
    state = _call(address, lambda c: c.status())
    console.print(
        f"firing {state.firing}  suppressed {state.suppressed}  resolved {state.resolved}  "
        f"silences {state.silences}  groups {state.groups}  events {state.events_received}  "
        f"rate-limited {state.rate_limited}"
    )
    console.print(f"rules: {escape(state.rules_source)}")
    table = Table(title="Sinks")
    for column in (
        "sink",
        "target",
        "health",
        "delivered",
        "failed",
        "given up",
        "queued",
        "last error",
    ):
        table.add_column(column, overflow="fold")
    for sink in state.sinks:
        table.add_row(
            sink.name,
            escape(sink.target),
            "[green]healthy[/]" if sink.healthy else "[red]failing[/]",
            str(sink.delivered),
            str(sink.failed),
            str(sink.given_up),
            str(sink.queued),
            escape(sink.last_error),
        )
    console.print(table)


@silence_app.command("add")
def add_silence(
    matchers: Annotated[
        list[str], typer.Argument(help='Matchers: alertname=NodeStale region=~"r[12]".')
    ],
    duration: str = typer.Option("2h", help="How long: 90s, 30m, 2h, 1d."),
    comment: str = typer.Option("", help="Why."),
    by: str = typer.Option(..., help="Who is silencing."),
    address: str = ADDRESS,
) -> None:
    """Silence the alerts every matcher selects."""
    try:
        seconds = parse_duration_s(duration)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    silence = _call(
        address,
        lambda c: c.create_silence(matchers, duration_s=seconds, created_by=by, comment=comment),
    )
    console.print(f"silence {silence.id} until {time.ctime(silence.ends_unix_ms / 1000)}")


@silence_app.command("list")
def list_silences(address: str = ADDRESS) -> None:
    """List active and recently expired silences."""
    console.print(silences_table(_call(address, lambda c: c.list_silences())))


@silence_app.command("expire")
def expire_silence(
    silence_id: str = typer.Argument(..., help="The silence's id."), address: str = ADDRESS
) -> None:
    """End a silence now."""
    silence = _call(address, lambda c: c.expire_silence(silence_id))
    console.print(f"silence {silence.id} expired")
