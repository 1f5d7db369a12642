"""The aggregator's settings, from ``FEDMESH_AGGREGATOR_*`` environment variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fedmesh.config import CommonSettings, env_int, env_path, env_str
from fedmesh.errors import InvalidArgument

SPOOL_DIR_ENV = "FEDMESH_AGGREGATOR_SPOOL_DIR"
MEMORY_THRESHOLD_ENV = "FEDMESH_AGGREGATOR_MEMORY_THRESHOLD_BYTES"
MAX_UPDATE_BYTES_ENV = "FEDMESH_AGGREGATOR_MAX_UPDATE_BYTES"
DEVICE_ENV = "FEDMESH_AGGREGATOR_DEVICE"
BLOCK_COORDINATES_ENV = "FEDMESH_AGGREGATOR_BLOCK_COORDINATES"


@dataclass(frozen=True)
class AggregatorSettings:
    """Where updates are spooled, how big they may be, and where the rules run.

    Updates smaller than ``memory_threshold_bytes`` are also kept in memory after
    they are written to the spool; larger ones are read back memory-mapped.
    ``block_coordinates`` 0 lets the rules pick their block size for the device.
    """

    common: CommonSettings
    spool_dir: Path
    memory_threshold_bytes: int
    max_update_bytes: int
    device: torch.device
    block_coordinates: int

    @classmethod
    def from_env(cls) -> AggregatorSettings:
        """Read the common settings and the ``FEDMESH_AGGREGATOR_*`` variables."""
        memory_threshold = env_int(MEMORY_THRESHOLD_ENV, 64 << 20)
        max_update = env_int(MAX_UPDATE_BYTES_ENV, 4 << 30)
        block = env_int(BLOCK_COORDINATES_ENV, 0)
        if memory_threshold < 0:
            raise InvalidArgument(f"{MEMORY_THRESHOLD_ENV}={memory_threshold} must be ≥ 0")
        if max_update < 1:
            raise InvalidArgument(f"{MAX_UPDATE_BYTES_ENV}={max_update} must be ≥ 1")
        if block < 0:
            raise InvalidArgument(f"{BLOCK_COORDINATES_ENV}={block} must be ≥ 0 (0: automatic)")
        return cls(
            common=CommonSettings.from_env(),
            spool_dir=env_path(SPOOL_DIR_ENV, Path("fedmesh-data") / "aggregator-spool"),
            memory_threshold_bytes=memory_threshold,
            max_update_bytes=max_update,
            device=parse_device(env_str(DEVICE_ENV, "cpu")),
            block_coordinates=block,
        )


def parse_device(name: str) -> torch.device:
    """The torch device named by ``FEDMESH_AGGREGATOR_DEVICE``, refused when absent here."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InvalidArgument(
            f"{DEVICE_ENV}={name!r} is not a torch device; expected 'cpu' or 'cuda[:N]'"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgument(f"{DEVICE_ENV}={name!r} but no CUDA device is available")
    if device.type not in ("cpu", "cuda"):
        raise InvalidArgument(f"{DEVICE_ENV}={name!r}; expected 'cpu' or 'cuda[:N]'")
    return device
