"""`fedmesh node`: run one node agent on its region of the simulated mesh."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from fedmesh.config import CommonSettings
from fedmesh.telemetry import setup_logging, setup_tracing

if TYPE_CHECKING:
    from fedmesh.client.signing import NodeSigner


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
    signing_key: Path | None = typer.Option(
        None,
        envvar="FEDMESH_NODE_SIGNING_KEY",
        help="The node's Ed25519 key (PKCS#8 PEM), created with mode 0600 if missing. "
        "Default: ~/.fedmesh/<node-id>.ed25519.pem.",
    ),
) -> None:
    """Register with the coordinator, beat, and train or evaluate on every task, until SIGTERM."""
    from fedmesh.client.signing import SigningKeyError, load_or_create_signing_key

    match = re.fullmatch(r"region-(\d+)", region)
    if match is None or int(match.group(1)) >= regions:
        raise typer.BadParameter(f"{region!r}; expected region-0 … region-{regions - 1}")
    path = signing_key if signing_key is not None else default_key_path(node_id)
    if signing_key is None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        signer = load_or_create_signing_key(path)
    except (SigningKeyError, OSError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--signing-key") from None
    setup_logging("node")
    setup_tracing("node")
    asyncio.run(
        _run(
            node_id, int(match.group(1)), regions, mesh_nodes, steps, fault_onset_rate, seed, signer
        )
    )


def default_key_path(node_id: str) -> Path:
    """Where a node keeps its signing key unless told otherwise (the id made file-safe)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", node_id)
    return Path.home() / ".fedmesh" / f"{safe}.ed25519.pem"


async def _run(
    node_id: str,
    index: int,
    regions: int,
    mesh_nodes: int,
    steps: int,
    rate: float,
    seed: int,
    signer: NodeSigner,
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
        agent = NodeAgent(
            node_id, data, CoordinatorClient(coordinator), transfers, signer, seed=seed
        )
        work = asyncio.create_task(agent.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, work.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await work
        await transfers.close()
