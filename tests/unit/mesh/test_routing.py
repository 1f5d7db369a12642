import numpy as np

from fedmesh.mesh.routing import accumulate_from_gateways, route_to_gateways, sum_towards_gateways

# 0 - 1 - 2 - 3, node 4 alone; node 0 is the gateway.
LINKS = np.array([[0, 1], [1, 2], [2, 3], [3, 4]])
GATEWAYS = np.array([True, False, False, False, False])


def test_routes_follow_hops_to_the_gateway() -> None:
    active = np.array([True, True, True, False])

    tree = route_to_gateways(5, LINKS, active, GATEWAYS)

    assert tree.depth.tolist() == [0, 1, 2, 3, -1]
    assert tree.parent.tolist() == [-1, 0, 1, 2, -1]
    assert tree.reachable.tolist() == [True, True, True, True, False]


def test_forwarded_load_sums_the_subtree() -> None:
    tree = route_to_gateways(5, LINKS, np.array([True, True, True, False]), GATEWAYS)

    load = sum_towards_gateways(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), tree)

    assert load.tolist() == [10.0, 9.0, 7.0, 4.0, 5.0]


def test_accumulation_from_gateways_sums_and_takes_bottlenecks() -> None:
    tree = route_to_gateways(5, LINKS, np.array([True, True, True, False]), GATEWAYS)
    per_hop = np.array([9.0, 1.0, 5.0, 2.0, 7.0])

    latency = accumulate_from_gateways(np.full(5, 10.0), per_hop, tree, combine="sum")
    bottleneck = accumulate_from_gateways(per_hop, per_hop, tree, combine="min")

    assert latency[:4].tolist() == [10.0, 11.0, 16.0, 18.0]
    assert np.isnan(latency[4])
    assert bottleneck[:4].tolist() == [9.0, 1.0, 1.0, 1.0]


def test_nearest_gateway_wins() -> None:
    gateways = np.array([True, False, False, False, True])

    tree = route_to_gateways(5, LINKS, np.ones(4, dtype=bool), gateways)

    assert tree.depth.tolist() == [0, 1, 2, 1, 0]
    assert tree.parent[3] == 4
