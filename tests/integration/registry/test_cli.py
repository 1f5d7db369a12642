"""``fedmesh models …`` against a real registry (the CLI runs in a thread with its own loop)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner, Result

from fedmesh.cli import models
from fedmesh.client.registry import Provenance
from fedmesh.model import AnomalyDetector
from fedmesh.proto.common.v1 import common_pb2
from fedmesh.services.registry import keys
from fedmesh.store.fencing import next_token
from fedmesh.tensors import encode

ModelFactory = Callable[..., dict[str, torch.Tensor]]


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models.console, "width", 250)
    monkeypatch.setattr(models.errors, "width", 250)


async def cli(registry: Any, *args: str) -> Result:
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, models.app, [*args, "--registry", registry.address]
    )


async def populated(registry: Any, make_model: ModelFactory) -> None:
    client = registry.client
    token = await next_token(registry.redis)
    await client.publish_tensors("detector", make_model(1))
    await client.publish_tensors(
        "detector",
        make_model(2),
        parent_version=1,
        provenance=Provenance(
            run_id="run-5",
            round=2,
            rule=common_pb2.AGGREGATION_RULE_MEDIAN,
            rejected={"node-3": "outside the median's band"},
        ),
        fencing_token=token,
    )
    for version, score in ((1, 0.8), (2, 0.7)):
        await client.record_evaluation(
            "detector",
            version,
            common_pb2.EvaluationMetrics(
                loss=0.2, macro_f1=score, pr_auc=0.6, samples=100, reporters=4
            ),
        )
    await client.promote("detector", 1, reason="first good one")
    await client.promote("detector", 2, alias="candidate")


async def test_list_shows_models_and_versions(registry: Any, make_model: ModelFactory) -> None:
    await populated(registry, make_model)

    models_out = await cli(registry, "list")
    versions_out = await cli(registry, "list", "detector")

    assert models_out.exit_code == 0, models_out.output
    row = next(line for line in models_out.stdout.splitlines() if "detector" in line)
    assert row.split("│")[1:5] == [" detector ", " 2      ", " 1          ", " 2         "]
    assert versions_out.exit_code == 0, versions_out.output
    lines = versions_out.stdout.splitlines()
    second = next(line for line in lines if "run-5/2" in line)
    assert "median" in second
    assert "candidate" in second
    assert "0.7000" in second
    first = next(line for line in lines if "production" in line)
    assert first.split("│")[1].strip() == "1"


async def test_show_prints_the_whole_record(registry: Any, make_model: ModelFactory) -> None:
    await populated(registry, make_model)
    version = await registry.client.get_version("detector", 2)

    result = await cli(registry, "show", "detector", "--version", "2")

    assert result.exit_code == 0, result.output
    assert version.ref.digest in result.stdout
    assert version.record_digest in result.stdout
    assert "node-3: outside the median's band" in result.stdout
    assert "layer.weight float32[32, 64]" in result.stdout
    assert "loss 0.2000, PR-AUC 0.6000, 100 samples from 4 nodes" in result.stdout


async def test_lineage_walks_to_the_first_version(registry: Any, make_model: ModelFactory) -> None:
    await populated(registry, make_model)

    result = await cli(registry, "lineage", "detector")

    assert result.exit_code == 0, result.output
    versions = [
        line.split("│")[1].strip()
        for line in result.stdout.splitlines()
        if line.startswith("│") and line.split("│")[1].strip().isdigit()
    ]
    assert versions == ["2", "1"]


async def test_verify_exits_zero_when_intact_and_two_on_tampering(
    registry: Any, make_model: ModelFactory
) -> None:
    await populated(registry, make_model)
    head = (await registry.client.get_version("detector")).record_digest

    intact = await cli(registry, "verify", "detector")
    stored = json.loads(await registry.redis.hget(keys.records_key("detector"), "1"))
    stored["record"] = stored["record"].replace('"parent_version":0', '"parent_version":7')
    await registry.redis.hset(keys.records_key("detector"), "1", json.dumps(stored))
    tampered = await cli(registry, "verify", "detector")

    assert intact.exit_code == 0, intact.output
    assert intact.stdout.strip() == (
        f"chain of detector intact: 2 versions, 2 blobs re-hashed; head record {head}"
    )
    assert tampered.exit_code == models.EXIT_TAMPERED
    assert tampered.stderr.startswith(
        "tampering found: record of version 1 of model 'detector' was altered"
    )


async def test_promote_through_the_gate_and_roll_back(
    registry: Any, make_model: ModelFactory
) -> None:
    await populated(registry, make_model)

    refused = await cli(registry, "promote", "detector", "2")
    with_margin = await cli(registry, "rollback", "detector")
    await registry.client.record_evaluation(
        "detector",
        2,
        common_pb2.EvaluationMetrics(loss=0.1, macro_f1=0.9, pr_auc=0.8, samples=100, reporters=4),
    )
    promoted = await cli(registry, "promote", "detector", "2", "--reason", "better f1")
    rolled = await cli(registry, "rollback", "detector", "--reason", "alarms")
    history = await cli(registry, "history", "detector", "--alias", "production")

    assert refused.exit_code == models.EXIT_ERROR
    assert refused.stderr.strip() == (
        "error: version 2 of model 'detector' has macro-F1 0.7000; production (version 1) has "
        "0.8000; the gate allows at most 0.0200 worse, i.e. at least 0.7800"
    )
    assert with_margin.exit_code == models.EXIT_ERROR
    assert promoted.stdout.strip() == "detector: production → version 2 (macro-F1 0.9000)"
    assert rolled.stdout.strip() == "detector: production rolled back to version 1"
    rows = [line for line in history.stdout.splitlines() if "production" in line]
    assert [[cell.strip() for cell in r.split("│")[3:7]] for r in rows] == [
        ["2", "1", "rollback", "alarms"],
        ["1", "2", "promote", "better f1"],
        ["-", "1", "promote", "first good one"],
    ]


async def test_pull_writes_the_checked_file(
    registry: Any, make_model: ModelFactory, tmp_path: Path
) -> None:
    await populated(registry, make_model)
    target = tmp_path / "detector.safetensors"

    result = await cli(registry, "pull", "detector", str(target), "--alias", "production")

    assert result.exit_code == 0, result.output
    assert target.read_bytes() == encode(make_model(1))
    assert f"detector version 1 → {target}" in result.stdout


async def test_an_unknown_model_is_an_error(registry: Any) -> None:
    result = await cli(registry, "show", "ghost")

    assert result.exit_code == models.EXIT_ERROR
    assert result.stderr.strip() == "error: model 'ghost' has no versions"


async def test_the_address_comes_from_the_environment(
    registry: Any, make_model: ModelFactory
) -> None:
    await populated(registry, make_model)
    runner = CliRunner()

    result = await asyncio.to_thread(
        runner.invoke, models.app, ["list"], env={"FEDMESH_REGISTRY_ADDRESS": registry.address}
    )

    assert result.exit_code == 0, result.output
    assert "detector" in result.stdout


async def test_init_publishes_a_seeded_detector_as_the_first_version(registry: Any) -> None:
    out = await cli(registry, "init", "mesh-detector", "--seed", "3")

    assert out.exit_code == 0, out.output
    assert "Published mesh-detector version 1" in out.stdout
    _, weights = await registry.client.download_tensors("mesh-detector", 1)
    torch.manual_seed(3)
    expected = AnomalyDetector().state_dict()
    assert sorted(weights) == sorted(expected)
    assert all(torch.equal(weights[name], tensor) for name, tensor in expected.items())
