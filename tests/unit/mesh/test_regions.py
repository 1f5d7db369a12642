import numpy as np
import pytest
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from fedmesh.mesh import Mesh, MeshConfig, TelemetrySeries, build_mesh, split_regions


@pytest.fixture(scope="module")
def mesh() -> Mesh:
    return build_mesh(MeshConfig(num_nodes=400), np.random.default_rng(4))


def _connected(mesh: Mesh, nodes: torch.Tensor) -> bool:
    inside = torch.zeros(mesh.num_nodes, dtype=torch.bool)
    inside[nodes] = True
    links = mesh.links[inside[mesh.links].all(dim=1)].numpy()
    local = {int(node): i for i, node in enumerate(nodes)}
    rows = [local[a] for a in links[:, 0]]
    cols = [local[b] for b in links[:, 1]]
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(nodes),) * 2)
    return bool(connected_components(graph, directed=False)[0] == 1)


def test_regions_cover_every_node_once_and_are_connected(mesh: Mesh) -> None:
    regions = split_regions(mesh, num_clients=8, seed=0)

    every = torch.cat([r.nodes for r in regions])
    assert sorted(every.tolist()) == list(range(400))
    assert [r.index for r in regions] == list(range(8))
    assert all(_connected(mesh, r.nodes) for r in regions)


def test_regions_are_of_similar_size(mesh: Mesh) -> None:
    sizes = [r.size for r in split_regions(mesh, num_clients=8, seed=0)]

    assert min(sizes) >= 25
    assert max(sizes) <= 75


def test_same_seed_same_regions(mesh: Mesh) -> None:
    first = split_regions(mesh, 8, seed=3)
    second = split_regions(mesh, 8, seed=3)
    other = split_regions(mesh, 8, seed=4)

    assert all(torch.equal(a.nodes, b.nodes) for a, b in zip(first, second, strict=True))
    assert not all(torch.equal(a.nodes, b.nodes) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("clients", [0, 401])
def test_client_count_must_fit_the_mesh(mesh: Mesh, clients: int) -> None:
    with pytest.raises(ValueError, match=rf"num_clients must be in \[1, 400\].*got {clients}"):
        split_regions(mesh, clients, seed=0)


def test_regions_have_their_own_fault_mix(busy_series: TelemetrySeries) -> None:
    regions = split_regions(busy_series, num_clients=4, seed=1)
    mixes = [r.fault_mix(busy_series) for r in regions]

    for mix in mixes:
        assert sum(mix.values()) == pytest.approx(1.0)
    shares = np.array([[mix.get(k, 0.0) for k in sorted(mixes[0])] for mix in mixes])
    # Non-IID: some kind's share differs by at least 20 points between two regions.
    assert float(np.ptp(shares, axis=0).max()) > 0.2
