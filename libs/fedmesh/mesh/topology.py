"""Random geometric mesh: node placement, radio links, gateways; connected by construction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from fedmesh.mesh.config import MeshConfig
from fedmesh.mesh.radio import link_range_m, mean_rssi_dbm

_PLACEMENT_ATTEMPTS = 200
_SHADOWING_MARGIN_SIGMAS = 3.0


@dataclass(frozen=True)
class Mesh:
    """The static mesh: where nodes are, which pairs can link, which nodes are gateways."""

    positions: torch.Tensor
    """Node coordinates in metres, float32 ``[N, 2]``."""
    links: torch.Tensor
    """Undirected radio links ``[E, 2]`` (long, smaller node id first)."""
    link_mean_rssi_dbm: torch.Tensor
    """Mean RSSI of each link (path loss and shadowing), float32 ``[E]``."""
    gateways: torch.Tensor
    """Bool ``[N]``: nodes with a wired backhaul."""
    side_m: float

    @property
    def num_nodes(self) -> int:
        """Number of mesh nodes."""
        return int(self.positions.shape[0])

    @property
    def num_links(self) -> int:
        """Number of undirected radio links."""
        return int(self.links.shape[0])


def build_mesh(config: MeshConfig, rng: np.random.Generator) -> Mesh:
    """Place nodes uniformly, link pairs whose mean RSSI reaches the link threshold, and
    move nodes outside the largest component until the mesh is connected.

    Raises ``ValueError`` when the density is too low to connect the mesh.
    """
    n, side, radio = config.num_nodes, config.side_m, config.radio
    reach = link_range_m(radio, _SHADOWING_MARGIN_SIGMAS * radio.shadowing_sigma_db)
    positions = rng.uniform(0.0, side, size=(n, 2))
    moves = np.zeros(n, dtype=np.uint64)
    salt = np.uint64(rng.integers(2**63))
    for _ in range(_PLACEMENT_ATTEMPTS):
        links, rssi = _radio_links(positions, moves, salt, reach, config)
        labels = _components(n, links)
        largest = np.bincount(labels).argmax()
        stranded = np.flatnonzero(labels != largest)
        if stranded.size == 0:
            gateways = np.zeros(n, dtype=bool)
            gateways[farthest_point_nodes(positions, config.num_gateways, rng)] = True
            return Mesh(
                positions=torch.from_numpy(positions.astype(np.float32)),
                links=torch.from_numpy(links.astype(np.int64)),
                link_mean_rssi_dbm=torch.from_numpy(rssi.astype(np.float32)),
                gateways=torch.from_numpy(gateways),
                side_m=side,
            )
        positions[stranded] = rng.uniform(0.0, side, size=(stranded.size, 2))
        moves[stranded] += np.uint64(1)
    raise ValueError(
        f"could not connect {n} nodes in {side:.0f} m x {side:.0f} m after "
        f"{_PLACEMENT_ATTEMPTS} placements; raise density_per_km2 or lower area_km2"
    )


def _radio_links(
    positions: NDArray[np.float64],
    moves: NDArray[np.uint64],
    salt: np.uint64,
    reach: float,
    config: MeshConfig,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    pairs = cKDTree(positions).query_pairs(reach, output_type="ndarray").astype(np.int64)
    pairs.sort(axis=1)
    a, b = pairs[:, 0], pairs[:, 1]
    shadow = config.radio.shadowing_sigma_db * _pair_normal(a, b, moves[a], moves[b], salt)
    distance = np.linalg.norm(positions[a] - positions[b], axis=1)
    rssi = mean_rssi_dbm(distance, shadow, config.radio)
    keep = rssi >= config.radio.link_threshold_dbm
    order = np.lexsort((b[keep], a[keep]))
    return pairs[keep][order], rssi[keep][order]


def _pair_normal(
    a: NDArray[np.int64],
    b: NDArray[np.int64],
    moves_a: NDArray[np.uint64],
    moves_b: NDArray[np.uint64],
    salt: np.uint64,
) -> NDArray[np.float64]:
    """A standard normal per pair of placed nodes, fixed while neither node moves.

    Shadowing belongs to a pair of places; hashing the pair and how often each node was
    re-placed keeps it stable for pairs that stay put while the mesh is being connected.
    """
    key = np.full(a.shape, salt, dtype=np.uint64)
    for part in (a.astype(np.uint64), b.astype(np.uint64), moves_a, moves_b):
        key = _splitmix64(key + part)
    first = ((key >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53
    second = (_splitmix64(key) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    normal: NDArray[np.float64] = np.sqrt(-2.0 * np.log(first)) * np.cos(2.0 * np.pi * second)
    return normal


def _splitmix64(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    mixed: NDArray[np.uint64] = z ^ (z >> np.uint64(31))
    return mixed


def _components(n: int, links: NDArray[np.int64]) -> NDArray[np.int32]:
    ones = np.ones(len(links), dtype=np.int8)
    adjacency = coo_matrix((ones, (links[:, 0], links[:, 1])), shape=(n, n))
    _, labels = connected_components(adjacency, directed=False)
    result: NDArray[np.int32] = labels
    return result


def farthest_point_nodes(
    positions: NDArray[np.float64], count: int, rng: np.random.Generator
) -> list[int]:
    """``count`` nodes spread evenly over the area: a random first one, then each next node
    the farthest from those already chosen."""
    chosen = [int(rng.integers(len(positions)))]
    nearest = np.linalg.norm(positions - positions[chosen[0]], axis=1)
    for _ in range(count - 1):
        pick = int(nearest.argmax())
        chosen.append(pick)
        nearest = np.minimum(nearest, np.linalg.norm(positions - positions[pick], axis=1))
    return chosen
