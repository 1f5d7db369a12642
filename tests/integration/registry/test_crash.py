"""The registry process dies between the blob rename and the record; a restart cleans up.

These run the real service as a subprocess (``python -m fedmesh.services.registry``),
with the test-only hook that exits right after the blob is renamed into place. They
start the service three times, so they carry the ``slow`` mark (``make test`` runs them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import torch

from fedmesh.client.registry import RegistryClient
from fedmesh.errors import NotFound, Unavailable
from fedmesh.rpc import open_channel
from fedmesh.services.registry import keys
from fedmesh.services.registry.server import CRASH_EXIT_CODE
from fedmesh.tensors import digest_tensors

ModelFactory = Callable[..., dict[str, torch.Tensor]]
START_TIMEOUT_S = 60


@contextlib.asynccontextmanager
async def registry_process(
    env: dict[str, str], log: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    with log.open("ab") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fedmesh.services.registry",
            env={**os.environ, "FEDMESH_LISTEN": "127.0.0.1:0", **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_S)
        assert line.startswith(b"LISTENING "), line
        yield process, f"127.0.0.1:{int(line.split()[1])}"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), START_TIMEOUT_S)


def blobs_under(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "blobs").rglob("*") if p.is_file())


@pytest.mark.slow
async def test_a_crash_between_blob_and_record_leaves_no_version_and_the_orphan_is_collected(
    tmp_path: Path,
    redis_url: str,
    redis_client: aioredis.Redis,
    make_model: ModelFactory,
) -> None:
    data_dir = tmp_path / "registry"
    env = {"FEDMESH_REDIS_URL": redis_url, "FEDMESH_REGISTRY_DATA_DIR": str(data_dir)}
    tensors = make_model(1)
    log = tmp_path / "registry.log"

    async with registry_process({**env, "FEDMESH_REGISTRY_TEST_CRASH_AFTER_BLOB": "1"}, log) as (
        crashing,
        address,
    ):
        async with open_channel(address) as channel:
            with pytest.raises(Unavailable):
                await RegistryClient(channel).publish_tensors("detector", tensors)
        exit_code = await asyncio.wait_for(crashing.wait(), START_TIMEOUT_S)
    blobs_after_crash = blobs_under(data_dir)
    head_after_crash = await redis_client.hgetall(keys.head_key("detector"))

    async with registry_process(env, log) as (_, address), open_channel(address) as channel:
        client = RegistryClient(channel)
        blobs_after_restart = blobs_under(data_dir)
        with pytest.raises(NotFound, match=r"^model 'detector' has no versions$"):
            await client.get_version("detector")
        republished = await client.publish_tensors("detector", tensors)
        chain = await client.verify_chain("detector")

    assert exit_code == CRASH_EXIT_CODE
    assert blobs_after_crash == [digest_tensors(tensors)]
    assert head_after_crash == {}
    assert blobs_after_restart == []
    assert republished.ref.version == 1
    assert chain.versions_checked == 1


@pytest.mark.slow
async def test_without_a_redis_url_the_service_runs_an_embedded_redis_in_its_data_dir(
    tmp_path: Path, make_model: ModelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FEDMESH_REDIS_URL", raising=False)
    data_dir = tmp_path / "registry"
    env = {"FEDMESH_REGISTRY_DATA_DIR": str(data_dir)}

    async with registry_process(env, tmp_path / "registry.log") as (process, address):
        async with open_channel(address) as channel:
            version = await RegistryClient(channel).publish_tensors("detector", make_model(1))
        process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.wait_for(process.wait(), START_TIMEOUT_S)

    assert exit_code == 0
    assert version.ref.version == 1
    assert [p.name for p in (data_dir / "redis").glob("appendonly*")]
    assert (data_dir / "signing.key").stat().st_mode & 0o777 == 0o600
