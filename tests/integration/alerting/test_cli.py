"""`fedmesh alerts …` against a running service (the CLI runs in a thread, like a shell would)."""

import asyncio
import json

from typer.testing import CliRunner, Result

from fedmesh.cli.alerts import app, parse_duration_s

from .conftest import StartAlerting

RUNNER = CliRunner()


async def cli(port: int, *args: str) -> Result:
    env = {"FEDMESH_ALERTING_ADDRESS": f"127.0.0.1:{port}", "COLUMNS": "250"}
    return await asyncio.to_thread(RUNNER.invoke, app, list(args), env=env)


def test_durations_for_silences() -> None:
    assert [parse_duration_s(t) for t in ("90", "90s", "30m", "2h", "1d")] == [
        90.0,
        90.0,
        1800.0,
        7200.0,
        86_400.0,
    ]


async def test_list_ack_silence_and_status(start_alerting: StartAlerting) -> None:
    alerting = await start_alerting()
    fired = await alerting.client.emit(
        "round_failed", source="coordinator", labels={"run": "r1", "round": "3"}
    )

    listed = await cli(alerting.port, "list", "--severity", "high")
    as_json = await cli(alerting.port, "list", "--json", "--label", "run=r1")
    acked = await cli(alerting.port, "ack", fired.fingerprint, "--by", "oncall")
    added = await cli(
        alerting.port, "silence", "add", 'alertname="RoundFailed"', "--duration", "30m",
        "--by", "oncall", "--comment", "known outage",
    )  # fmt: skip
    silences = await cli(alerting.port, "silence", "list")
    silence_id = (await alerting.client.list_silences())[0].id
    suppressed = await cli(alerting.port, "list", "--state", "suppressed")
    expired = await cli(alerting.port, "silence", "expire", silence_id)
    status = await cli(alerting.port, "status")

    assert listed.exit_code == 0, listed.output
    assert fired.fingerprint in listed.output
    assert "RoundFailed" in listed.output
    assert "Round 3 of run r1 failed" in listed.output
    [record] = json.loads(as_json.output)
    assert (record["fingerprint"], record["count"], record["severity"]) == (
        fired.fingerprint,
        1,
        "high",
    )
    assert acked.output.strip() == f"acknowledged {fired.fingerprint} (RoundFailed) by oncall"
    assert added.exit_code == 0, added.output
    assert added.output.startswith(f"silence {silence_id} until ")
    assert 'alertname="RoundFailed"' in silences.output
    assert "known outage" in silences.output
    assert "suppressed" in suppressed.output
    assert fired.fingerprint in suppressed.output
    assert expired.output.strip() == f"silence {silence_id} expired"
    assert "firing 1  suppressed 0" in status.output
    assert "webhook" in status.output
    assert "healthy" in status.output


async def test_watch_prints_the_firing_alerts(start_alerting: StartAlerting) -> None:
    alerting = await start_alerting()
    fired = await alerting.client.report_anomaly("n3", 0.96, {}, "mesh-detector", 1, "r2")

    watched = await cli(alerting.port, "watch", "--for", "1s")

    assert watched.exit_code == 0, watched.output
    assert "firing" in watched.output
    assert "critical" in watched.output
    assert f"NodeAnomaly node=n3 region=r2 x1 {fired.fingerprint}" in watched.output


async def test_bad_input_and_service_errors_exit_non_zero_with_the_reason(
    start_alerting: StartAlerting,
) -> None:
    alerting = await start_alerting()

    severity = await cli(alerting.port, "list", "--severity", "urgent")
    label = await cli(alerting.port, "list", "--label", "run")
    duration = await cli(alerting.port, "silence", "add", "a=b", "--by", "x", "--duration", "soon")
    unknown = await cli(alerting.port, "ack", "0123456789abcdef", "--by", "oncall")
    regex = await cli(alerting.port, "silence", "add", 'node=~"n["', "--by", "oncall")

    assert severity.exit_code == 2
    assert "unknown severity 'urgent'; expected info, medium, high, critical" in severity.output
    assert label.exit_code == 2
    assert "malformed label 'run'; expected name=value" in label.output
    assert duration.exit_code == 2
    assert "malformed duration 'soon'" in duration.output
    assert unknown.exit_code == 1
    assert "NOT_FOUND: no alert has fingerprint '0123456789abcdef'" in unknown.output
    assert regex.exit_code == 1
    assert "INVALID_ARGUMENT" in regex.output
    assert "invalid regular expression" in regex.output
    assert await alerting.client.list_silences() == []
