"""The coordinator as its own process: Prometheus metrics on FEDMESH_METRICS_PORT, and a
SIGTERM that hands the lease over before the process exits."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

import redis.asyncio as aioredis

from fedmesh.store import free_port, keys


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        return str(response.read().decode())


async def test_metrics_are_served_and_sigterm_releases_the_lease(
    tmp_path: Path, redis_url: str, registry_address: str, redis_client: aioredis.Redis
) -> None:
    metrics_port = free_port()
    env = {
        **os.environ,
        "FEDMESH_REDIS_URL": redis_url,
        "FEDMESH_REGISTRY_ADDRESS": registry_address,
        "FEDMESH_LISTEN": "127.0.0.1:0",
        "FEDMESH_METRICS_PORT": str(metrics_port),
        "FEDMESH_COORDINATOR_REPLICA_ID": "replica-p",
    }
    with (tmp_path / "coordinator.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fedmesh.services.coordinator", env=env, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 60
        page = ""
        while "fedmesh_coordinator_leader 1.0" not in page:
            assert process.returncode is None, (tmp_path / "coordinator.log").read_text()
            assert time.monotonic() < deadline, page or "no metrics page"
            await asyncio.sleep(0.2)
            try:
                page = await asyncio.to_thread(scrape, metrics_port)
            except OSError:
                page = ""
        held = await redis_client.get(keys.leader_key())

        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert held == "replica-p"
    assert "fedmesh_coordinator_fencing_token 1.0" in page
    assert 'fedmesh_coordinator_leadership_changes_total{change="acquired"} 1.0' in page
    assert 'fedmesh_coordinator_phase_transitions_total{phase="COLLECTING"} 0.0' in page
    assert "fedmesh_coordinator_rounds_opened_total 0.0" in page
    assert code == 0
    assert await redis_client.get(keys.leader_key()) is None
