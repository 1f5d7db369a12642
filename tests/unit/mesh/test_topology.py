import numpy as np
import pytest
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from fedmesh.mesh import MeshConfig, build_mesh

CONFIG = MeshConfig(num_nodes=300)


def test_mesh_is_connected_and_links_reach_the_threshold() -> None:
    mesh = build_mesh(CONFIG, np.random.default_rng(3))
    links = mesh.links.numpy()
    adjacency = coo_matrix((np.ones(len(links)), (links[:, 0], links[:, 1])), shape=(300, 300))

    assert connected_components(adjacency, directed=False)[0] == 1
    assert bool((mesh.link_mean_rssi_dbm >= CONFIG.radio.link_threshold_dbm).all())
    assert bool((mesh.links[:, 0] < mesh.links[:, 1]).all())
    assert len({tuple(pair) for pair in links.tolist()}) == mesh.num_links


def test_nodes_lie_in_the_area_and_gateways_are_counted() -> None:
    mesh = build_mesh(CONFIG, np.random.default_rng(3))

    assert mesh.positions.shape == (300, 2)
    assert bool(((mesh.positions >= 0) & (mesh.positions <= CONFIG.side_m)).all())
    assert int(mesh.gateways.sum()) == CONFIG.num_gateways


def test_mean_degree_is_that_of_a_mesh() -> None:
    mesh = build_mesh(CONFIG, np.random.default_rng(3))

    assert 6.0 < 2 * mesh.num_links / mesh.num_nodes < 20.0


def test_same_generator_seed_gives_the_same_mesh() -> None:
    first = build_mesh(CONFIG, np.random.default_rng(11))
    second = build_mesh(CONFIG, np.random.default_rng(11))
    other = build_mesh(CONFIG, np.random.default_rng(12))

    assert torch.equal(first.positions, second.positions)
    assert torch.equal(first.links, second.links)
    assert not torch.equal(first.positions, other.positions)


def test_too_sparse_a_mesh_cannot_be_connected() -> None:
    sparse = MeshConfig(num_nodes=50, area_km2=1000.0)

    with pytest.raises(ValueError, match="could not connect 50 nodes"):
        build_mesh(sparse, np.random.default_rng(0))
