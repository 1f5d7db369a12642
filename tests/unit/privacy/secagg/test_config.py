from typing import Any

import pytest

from fedmesh.privacy.secagg import SecAggConfig


def test_defaults_follow_the_degree_and_a_majority_threshold() -> None:
    config = SecAggConfig.create(tuple(range(100)), 10, b"g", b"run/1")

    assert (config.degree, config.threshold, config.min_survivors) == (14, 8, 8)
    assert len(config.graph.neighbours(0)) == 14


def test_small_rounds_use_the_complete_graph() -> None:
    config = SecAggConfig.create((4, 8, 15), 10, b"g", b"run/1")

    assert (config.degree, config.threshold, config.min_survivors) == (2, 2, 2)
    assert config.graph.neighbours(4) == frozenset({8, 15})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"threshold": 7},
            r"threshold must be a strict majority of the 14 neighbours, in \[8, 14\], got 7",
        ),
        ({"threshold": 15}, r"in \[8, 14\], got 15"),
        ({"min_survivors": 1}, r"min_survivors must be in \[2, 100\], got 1"),
        ({"vector_length": 0}, "vector_length must be >= 1, got 0"),
        ({"round_context": b""}, "round_context must identify the run and round"),
        ({"participants": (-1, *range(99))}, r"participant ids must be in \[0, 4294967294\]"),
    ],
)
def test_invalid_configs_are_refused(changes: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {
        "participants": tuple(range(100)),
        "vector_length": 10,
        "degree": 14,
        "threshold": 8,
        "min_survivors": 8,
        "graph_seed": b"g",
        "round_context": b"run/1",
    } | changes

    with pytest.raises(ValueError, match=message):
        SecAggConfig(**fields)
