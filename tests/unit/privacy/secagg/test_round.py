"""Whole SecAgg+ rounds: exact sums under dropouts, aborts below threshold, no update revealed."""

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from fedmesh.privacy.secagg import (
    ClientStage,
    FixedPointCodec,
    SecAggAbort,
    SecAggConfig,
    SecAggResult,
    SecAggServer,
    SecAggStageError,
    ServerStage,
)
from fedmesh.privacy.secagg.quantize import WORD

Driver = Callable[..., SecAggResult]

NODES = 40
LENGTH = 64
# k = 20 with t = 11 tolerates 9 dropped neighbours of 20; SecAgg+ proper, not the complete graph.
CONFIG = SecAggConfig.create(
    tuple(range(NODES)), LENGTH, b"graph-seed", b"run-a/round-1", degree=20
)


def random_updates(count: int, length: int, seed: int = 0) -> dict[int, NDArray[np.uint32]]:
    rng = np.random.default_rng(seed)
    return {
        node: rng.integers(0, 2**32, length, dtype=np.uint64).astype(WORD) for node in range(count)
    }


def plain_sum(updates: dict[int, NDArray[np.uint32]], nodes: tuple[int, ...]) -> NDArray[np.uint32]:
    total = np.zeros(next(iter(updates.values())).shape, dtype=WORD)
    for node in nodes:
        np.add(total, updates[node], out=total)
    return total


@pytest.mark.parametrize("dropout_fraction", [0.0, 0.1, 0.3])
def test_masked_sum_equals_the_plain_sum_when_nodes_drop_after_sharing_keys(
    secagg_round: Driver, dropout_fraction: float
) -> None:
    updates = random_updates(NODES, LENGTH)
    dropped = random.Random(0).sample(range(NODES), round(dropout_fraction * NODES))

    result = secagg_round(CONFIG, updates, {node: ClientStage.MASKED_INPUT for node in dropped})

    survivors = tuple(sorted(set(range(NODES)) - set(dropped)))
    assert result.contributors == survivors
    assert result.dropped == tuple(sorted(dropped))
    assert np.array_equal(result.total, plain_sum(updates, survivors))


def test_nodes_dropping_at_every_stage_still_give_the_exact_sum(secagg_round: Driver) -> None:
    updates = random_updates(NODES, LENGTH, seed=1)
    drops = {
        3: ClientStage.SHARE_KEYS,  # advertised keys, then vanished: nobody masks with it
        17: ClientStage.MASKED_INPUT,  # shared keys: its pairwise masks are removed via its key
        25: ClientStage.MASKED_INPUT,
        30: ClientStage.UNMASKING,  # its input counts; its self-mask comes from its neighbours
        31: ClientStage.UNMASKING,
    }

    result = secagg_round(CONFIG, updates, drops)

    contributors = tuple(node for node in range(NODES) if node not in (3, 17, 25))
    assert result.contributors == contributors
    assert np.array_equal(result.total, plain_sum(updates, contributors))


def test_float_deltas_survive_the_round_within_the_fixed_point_resolution(
    secagg_round: Driver,
) -> None:
    codec = FixedPointCodec(clip_range=1.0, max_summands=NODES)
    generator = torch.Generator().manual_seed(5)
    deltas = {node: torch.rand(LENGTH, generator=generator) * 2 - 1 for node in range(NODES)}

    result = secagg_round(
        CONFIG,
        {node: codec.quantize(delta) for node, delta in deltas.items()},
        {2: ClientStage.MASKED_INPUT},
    )

    expected = torch.stack([deltas[node] for node in result.contributors]).double().mean(0)
    mean = codec.dequantize_mean(result.total, len(result.contributors))
    assert torch.allclose(mean.double(), expected, atol=NODES * codec.resolution)


def test_too_many_dropouts_in_a_neighbourhood_abort_the_round_with_the_reason(
    secagg_round: Driver,
) -> None:
    updates = random_updates(NODES, LENGTH)
    victim = 7
    lost = sorted(CONFIG.graph.neighbours(victim))[:10]  # 10 of its 20 neighbours, threshold 11

    with pytest.raises(SecAggAbort) as aborted:
        secagg_round(CONFIG, updates, {node: ClientStage.UNMASKING for node in lost})

    assert aborted.value.reason == (
        f"the self-mask seed of node {victim} cannot be reconstructed: "
        "10 neighbours revealed a share, threshold 11"
    )


def test_fewer_masked_inputs_than_min_survivors_abort_before_any_unmasking(
    secagg_round: Driver,
) -> None:
    config = SecAggConfig.create(tuple(range(8)), LENGTH, b"g", b"run-a/round-2", min_survivors=6)
    updates = random_updates(8, LENGTH)

    with pytest.raises(SecAggAbort, match="5 masked inputs received, fewer than min_survivors 6"):
        secagg_round(
            config,
            updates,
            {0: ClientStage.MASKED_INPUT, 1: ClientStage.MASKED_INPUT, 2: ClientStage.MASKED_INPUT},
        )


def test_an_aborted_server_refuses_further_messages_with_the_reason(secagg_round: Driver) -> None:
    config = SecAggConfig.create(tuple(range(4)), LENGTH, b"g", b"run-a/round-3")
    server = SecAggServer(config)

    with pytest.raises(SecAggAbort, match="0 nodes advertised keys"):
        server.close_advertisements()
    with pytest.raises(
        SecAggStageError, match=r"refused: the round aborted \(0 nodes advertised keys"
    ):
        server.close_advertisements()
    assert server.stage is ServerStage.ABORTED


def test_a_masked_input_reveals_nothing_equal_to_the_quantised_update(
    secagg_round: Driver, round_record: Any
) -> None:
    config = SecAggConfig.create(tuple(range(10)), 20_000, b"g", b"run-a/round-4")
    # Structured inputs (mostly zeros) would show through any weak mask.
    updates = {node: np.zeros(20_000, dtype=WORD) for node in range(10)}
    updates[4][:100] = 12345

    secagg_round(config, updates, {9: ClientStage.MASKED_INPUT}, round_record)

    assert len(round_record.masked_inputs) == 9
    for node, masked in round_record.masked_inputs.items():
        vector = np.frombuffer(masked.masked_vector, dtype=WORD)
        assert np.count_nonzero(vector == updates[node]) <= 2
        assert float(vector.mean()) / 2**32 == pytest.approx(0.5, abs=0.01)


def test_the_server_never_holds_an_individual_update(
    secagg_round: Driver, round_record: Any
) -> None:
    config = SecAggConfig.create(tuple(range(12)), 4096, b"g", b"run-a/round-5")
    updates = random_updates(12, 4096, seed=9)
    individual = [update.tobytes() for update in updates.values()]
    checked: list[int] = []

    def no_individual_update_in(server: SecAggServer) -> None:
        for value in _reachable_values(vars(server)):
            raw = value.tobytes() if isinstance(value, np.ndarray) else value
            assert raw not in individual
        checked.append(1)

    round_record.observe = no_individual_update_in
    result = secagg_round(config, updates, {5: ClientStage.MASKED_INPUT}, round_record)

    assert len(checked) == 11 + 11 + 1
    assert result.total.tobytes() not in individual


def _reachable_values(state: object) -> list[np.ndarray[Any, Any] | bytes]:
    found: list[np.ndarray[Any, Any] | bytes] = []
    pending = [state]
    while pending:
        item = pending.pop()
        if isinstance(item, np.ndarray | bytes):
            found.append(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            pending.extend(item)
        elif hasattr(item, "__dataclass_fields__"):
            pending.extend(vars(item).values())
    return found
