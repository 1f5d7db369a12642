"""`python -m fedmesh.services.alerting`: starts, serves, stops on SIGTERM; refuses bad rules."""

import asyncio
import os
import signal
import sys
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedmesh.client.alerting import AlertingClient
from fedmesh.rpc import open_channel


def environment(redis_url: str, rules: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDMESH_ALERTING_")}
    env.update({"FEDMESH_LISTEN": "127.0.0.1:0", "FEDMESH_REDIS_URL": redis_url})
    if rules is not None:
        env["FEDMESH_ALERTING_RULES"] = str(rules)
    return env


async def test_the_service_process_serves_and_stops_on_sigterm(redis_url: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fedmesh.services.alerting",
        env=environment(redis_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        port = int(line.decode().removeprefix("LISTENING "))
        async with open_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for _ in range(100):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
                await asyncio.sleep(0.05)
            result = await AlertingClient(channel).emit(
                "run_finished", source="coordinator", labels={"run": "process-test"}
            )
            status = await AlertingClient(channel).status()
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)

    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert len(result.fingerprint) == 16
    assert status.rules_source == "default_rules.yaml (packaged)"
    assert code == 0


async def test_a_bad_rule_file_is_refused_at_start_with_line_and_reason(
    redis_url: str, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("route:\n  receivers: [log]\n  group_wait: soon\nevents: {}\nanomaly: {}\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fedmesh.services.alerting",
        env=environment(redis_url, rules),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)

    assert process.returncode == 2
    assert stdout == b""
    assert stderr.decode().strip().splitlines()[-1] == (
        f"alerting: {rules}:3: route.group_wait: malformed duration 'soon'; "
        "expected e.g. 500ms, 30s, 5m, 1h30m"
    )
