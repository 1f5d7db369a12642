import math

import pytest

from fedmesh.privacy.secagg.graph import default_degree, degree_for_dropout, harary_graph

NODES = tuple(range(100, 130))


@pytest.mark.parametrize("degree", [2, 6, 7])
def test_harary_graph_is_regular_symmetric_and_loop_free(degree: int) -> None:
    graph = harary_graph(NODES, degree, b"seed")

    assert graph.nodes == frozenset(NODES)
    for node in NODES:
        neighbours = graph.neighbours(node)
        assert len(neighbours) == degree
        assert node not in neighbours
        assert all(node in graph.neighbours(peer) for peer in neighbours)


def test_the_same_seed_gives_the_same_graph_and_another_seed_another() -> None:
    assert harary_graph(NODES, 6, b"a") == harary_graph(tuple(reversed(NODES)), 6, b"a")
    assert harary_graph(NODES, 6, b"a") != harary_graph(NODES, 6, b"b")


def test_a_degree_of_n_minus_one_or_more_is_the_complete_graph() -> None:
    graph = harary_graph((1, 2, 3, 4), 10, b"seed")

    assert graph.neighbours(1) == frozenset({2, 3, 4})


def test_harary_graph_is_connected_and_splits_when_cut() -> None:
    graph = harary_graph(NODES, 2, b"seed")  # a ring
    ring_neighbours = sorted(graph.neighbours(NODES[0]))

    assert graph.components(NODES) == [frozenset(NODES)]
    remaining = set(NODES) - set(ring_neighbours)
    assert sorted(map(len, graph.components(remaining))) == [1, 27]


def test_odd_degree_on_an_odd_number_of_nodes_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"an odd degree \(3\) needs an even number of nodes, got 9"
    ):
        harary_graph(tuple(range(9)), 3, b"seed")


@pytest.mark.parametrize(
    ("participants", "degree", "message"),
    [
        ((1, 1, 2), 2, "participants must be distinct"),
        ((1,), 2, "secure aggregation needs at least 2 nodes, got 1"),
        ((1, 2, 3), 0, "degree must be >= 1, got 0"),
    ],
)
def test_invalid_graphs_are_refused(
    participants: tuple[int, ...], degree: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        harary_graph(participants, degree, b"seed")


@pytest.mark.parametrize(("nodes", "degree"), [(2, 1), (5, 4), (20, 10), (100, 14), (1000, 20)])
def test_default_degree_is_twice_the_ceiling_of_log2_n(nodes: int, degree: int) -> None:
    assert default_degree(nodes) == degree


def test_degree_for_dropout_is_the_smallest_even_degree_meeting_the_union_bound() -> None:
    def failure(degree: int, rate: float, nodes: int) -> float:
        tolerated = degree - (degree // 2 + 1)
        return nodes * sum(
            math.comb(degree, lost) * rate**lost * (1 - rate) ** (degree - lost)
            for lost in range(tolerated + 1, degree + 1)
        )

    degree = degree_for_dropout(100, 0.1, 1e-3)

    assert degree == 20
    assert failure(degree, 0.1, 100) <= 1e-3
    assert failure(degree - 2, 0.1, 100) > 1e-3
    assert degree_for_dropout(40, 0.3, 1e-3) == 39  # falls back to the complete graph


def test_degree_for_dropout_refuses_a_rate_a_majority_cannot_survive() -> None:
    with pytest.raises(ValueError, match=r"dropout_rate must be in \[0, 0.5\)"):
        degree_for_dropout(100, 0.5, 1e-3)
