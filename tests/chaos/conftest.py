"""Chaos fixtures: a local stack of subprocesses with two coordinator replicas per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedmesh.cli.stack import LocalStack
from fedmesh.client.coordinator import CoordinatorClient
from fedmesh.client.registry import RegistryClient
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.proto.coordinator.v1 import coordinator_pb2 as pb
from fedmesh.rpc import open_channel

from .fleet import tiny_model

# A short lease so that a takeover costs the test seconds, not the default 5 s.
LEASE_TTL_MS = 2000


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    """Redis (AOF on), registry, alerting, aggregator and two coordinator replicas."""
    env = {
        "FEDMESH_COORDINATOR_LEASE_TTL_MS": str(LEASE_TTL_MS),
        "FEDMESH_COORDINATOR_HEARTBEAT_S": "1",
    }
    with LocalStack(tmp_path / "stack", extra_env=env, coordinator_replicas=2) as running:
        yield running
    assert not any(s.running for s in running.services.values())


@dataclass(frozen=True)
class Operator:
    """What the test drives the stack with: the coordinator (any replica) and the registry."""

    coordinator: CoordinatorClient
    registry: RegistryClient

    async def publish_initial(self, model_name: str) -> int:
        """Publish version 1 of the tiny model; returns its version number."""
        version = await self.registry.publish_tensors(model_name, tiny_model(1))
        return int(version.ref.version)


@pytest.fixture
async def operator(stack: LocalStack) -> AsyncIterator[Operator]:
    """Clients on the stack; the coordinator channel fails over between the replicas."""
    async with (
        open_channel(stack.coordinator_target) as coordinator,
        open_channel(stack.services["registry"].address) as registry,
    ):
        yield Operator(CoordinatorClient(coordinator), RegistryClient(registry))


def fedavg_spec(
    model_name: str,
    *,
    rounds: int,
    target: int,
    min_participants: int,
    collect_deadline_s: float,
) -> pb.RunSpec:
    """A FedAvg run that selects ``target`` nodes per round (no over-selection)."""
    return pb.RunSpec(
        model_name=model_name,
        aggregation=common.AggregationSpec(rule=common.AGGREGATION_RULE_FEDAVG),
        rounds=rounds,
        min_participants=min_participants,
        target_participants=target,
        over_selection=0.0,
        collect_deadline_s=collect_deadline_s,
        aggregate_deadline_s=30.0,
        seed=5,
    )
