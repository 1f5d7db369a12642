"""``fedmesh run start`` with privacy and secure-aggregation options against a real coordinator."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from rich.console import Console
from typer.testing import CliRunner, Result

from fedmesh.cli import runs
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.proto.coordinator.v1 import coordinator_pb2 as pb

from .conftest import MODEL, StartReplica, snapshot


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runs.console, "width", 300)


async def start_run(address: str, *options: str) -> Result:
    args = ["start", "--model", MODEL, *options, "--coordinator", address]
    return await asyncio.to_thread(CliRunner().invoke, runs.app, args)


async def test_a_run_its_budget_cannot_afford_is_refused_with_the_numbers(
    start_replica: StartReplica, redis_client: aioredis.Redis
) -> None:
    async with start_replica(loops=False) as replica:
        before = await snapshot(redis_client)
        result = await start_run(
            replica.address, "--rounds", "5", "--dp", "--noise-multiplier", "1.1",
            "--epsilon-budget", "2.0",
        )  # fmt: skip

        assert result.exit_code == 1
        text = " ".join(result.output.split())
        assert (
            "FAILED_PRECONDITION: privacy budget too small: 5 rounds at sampling rate 1.0" in text
        )
        assert "over the budget 2.0; the budget affords 0 rounds" in text
        assert await snapshot(redis_client) == before


async def test_impossible_secure_settings_are_refused_as_invalid(
    start_replica: StartReplica, redis_client: aioredis.Redis
) -> None:
    async with start_replica(loops=False) as replica:
        before = await snapshot(redis_client)
        result = await start_run(
            replica.address, "--secure-aggregation", "--secagg-neighbours", "4",
            "--secagg-threshold", "5",
        )  # fmt: skip

        assert result.exit_code == 1
        text = " ".join(result.output.split())
        assert "INVALID_ARGUMENT: invalid run spec:" in text
        assert "threshold 5" in text
        assert await snapshot(redis_client) == before


def test_the_runs_table_shows_epsilon_only_for_private_runs() -> None:
    private = pb.RunInfo(
        run_id="r1",
        epsilon_spent=1.25,
        spec=pb.RunSpec(privacy=common.PrivacySpec(enabled=True, epsilon_budget=3.0, delta=1e-5)),
    )
    plain = pb.RunInfo(run_id="r2")
    console = Console(width=300, record=True)
    console.print(runs._runs_table([private, plain]))
    lines = console.export_text().splitlines()

    assert "1.250 of 3 (δ 1e-05)" in next(line for line in lines if "r1" in line)
    assert "–" in next(line for line in lines if "r2" in line).split("│")[-2]
