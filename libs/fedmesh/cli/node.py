"""`fedmesh node`: run one node agent on its region of the simulated mesh."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal

import typer

from fedmesh.config import CommonSettings
from fedmesh.telemetry import setup_logging, setup_tracing


def node(
    node_id: str = typer.Option(
        ..., help="This node's identity (exact, as the coordinator knows it)."
    ),
    region: str = typer.Option(
        "region-0", help="Which region of the mesh this node holds: region-N."
    ),
    regions: int = typer.Option(8, min=1, help="How many regions the mesh is split into."),
    mesh_nodes: int = typer.Option(200, min=10, help="Nodes of the simulated mesh."),
    steps: int = typer.Option(160, min=20, help="Simulated telemetry steps."),
    fault_onset_rate: float = typer.Option(3e-3, help="Fault instances per node and step."),
    seed: int = typer.Option(7, help="Mesh seed: every node of one mesh must use the same."),
) -> None:
    """Register with the coordinator, beat, and train or evaluate on every task, until SIGTERM."""
    match = re.fullmatch(r"region-(\d+)", region)
    if match is None or int(match.group(1)) >= regions:
        raise typer.BadParameter(f"{region!r}; expected region-0 … region-{regions - 1}")
    setup_logging("node")
    setup_tracing("node")
    asyncio.run(
        _run(node_id, int(match.group(1)), regions, mesh_nodes, steps, fault_onset_rate, seed)
    )


async def _run(
    node_id: str, index: int, regions: int, mesh_nodes: int, steps: int, rate: float, seed: int
) -> None:
    import torch

    from fedmesh.client.agent import NodeAgent
    from fedmesh.client.coordinator import CoordinatorClient
    from fedmesh.client.local_data import region_data
    from fedmesh.client.registry import RegistryClient
    from fedmesh.client.transfers import ModelTransfers
    from fedmesh.mesh import FaultRates, MeshConfig, simulate, split_regions
    from fedmesh.rpc import open_channel

    torch.set_num_threads(1)  # a node shares its CPU with the mesh software it watches
    settings = CommonSettings.from_env()
    config = MeshConfig(num_nodes=mesh_nodes, faults=FaultRates(onset_rate=rate))
    series = await asyncio.to_thread(simulate, config, steps, seed)
    data = region_data(series, split_regions(series, regions, seed)[index])
    async with (
        open_channel(settings.coordinator_address, tls=settings.tls) as coordinator,
        open_channel(settings.registry_address, tls=settings.tls, default_timeout=300) as registry,
    ):
        transfers = ModelTransfers(RegistryClient(registry), tls=settings.tls)
        agent = NodeAgent(node_id, data, CoordinatorClient(coordinator), transfers, seed=seed)
        work = asyncio.create_task(agent.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, work.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await work
        await transfers.close()
