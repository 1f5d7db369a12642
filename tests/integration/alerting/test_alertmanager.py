"""The Alertmanager sink against a real Alertmanager (Debian's prometheus-alertmanager)."""

import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from fedmesh.client.alerting import Severity
from fedmesh.store import free_port

from .conftest import StartAlerting, Until

CONFIG = """\
route:
  receiver: blackhole
receivers:
  - name: blackhole
"""


def alertmanager_binary() -> str | None:
    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if found is None and Path("/usr/bin/prometheus-alertmanager").exists():
        found = "/usr/bin/prometheus-alertmanager"
    return found


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    binary = alertmanager_binary()
    if binary is None:
        pytest.skip(
            "prometheus-alertmanager is not installed "
            "(apt-get install prometheus-alertmanager; .ci/run installs it)"
        )
    config = tmp_path / "alertmanager.yml"
    config.write_text(CONFIG)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "alertmanager.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"alertmanager exited: {(tmp_path / 'alertmanager.log').read_text()}")
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("alertmanager did not become ready")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def to_ms(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


async def test_alerts_appear_in_alertmanager_with_our_labels_and_resolved_ones_end(
    start_alerting: StartAlerting, alertmanager: str, until: Until
) -> None:
    client = (await start_alerting(FEDMESH_ALERTING_ALERTMANAGER_URL=alertmanager)).client
    failed = await client.emit(
        "round_failed", source="coordinator", labels={"run": "r1", "round": "3"}
    )
    anomaly = await client.report_anomaly("n1", 0.95, {"loss_rate": 0.4}, "mesh-detector", 2, "r1")
    ours = {a.fingerprint: a for a in await client.list_alerts()}

    async def in_alertmanager() -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as http:
            return list((await http.get(f"{alertmanager}/api/v2/alerts")).json())

    async def both_there() -> bool:
        return {a["fingerprint"] for a in await in_alertmanager()} == set(ours)

    await until(both_there)
    listed = {a["fingerprint"]: a for a in await in_alertmanager()}

    for fingerprint, alert in ours.items():
        theirs = listed[fingerprint]
        assert theirs["labels"] == alert.labels
        assert theirs["annotations"] == alert.annotations
        assert theirs["generatorURL"] == f"https://alerting.example/alerts/{fingerprint}"
        assert to_ms(theirs["startsAt"]) == alert.starts_unix_ms
        assert to_ms(theirs["endsAt"]) > time.time() * 1000
        assert theirs["status"]["state"] == "active"
    assert listed[anomaly.fingerprint]["labels"]["severity"] == Severity.CRITICAL.value
    assert listed[failed.fingerprint]["labels"]["alertname"] == "RoundFailed"

    await client.emit(
        "round_failed", source="coordinator", labels={"run": "r1", "round": "3"}, resolve=True
    )

    async def resolved_ended() -> bool:
        return {a["fingerprint"] for a in await in_alertmanager()} == {anomaly.fingerprint}

    await until(resolved_ended)
    sink = {s.name: s for s in (await client.status()).sinks}["alertmanager"]
    assert sink.healthy
    assert sink.delivered >= 3
    assert sink.target == f"{alertmanager}/api/v2/alerts"
