"""SecAggServer: what it accepts in each stage, idempotent repeats, and the aborts it raises."""

import dataclasses
import itertools
import os

import numpy as np
import pytest

from fedmesh.privacy.secagg import (
    ConflictingSecAggMessage,
    InvalidSecAggMessage,
    KeyAdvertisement,
    KeyShares,
    MaskedInput,
    RevealedShare,
    SecAggAbort,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    SecAggStageError,
    ServerStage,
    UnmaskingRequest,
)
from fedmesh.privacy.secagg.quantize import WORD
from fedmesh.privacy.secagg.shamir import split_secret

CONFIG = SecAggConfig.create(tuple(range(6)), 8, b"g", b"run-s/round-1")  # complete graph, t = 3
ONES = np.ones(8, dtype=WORD)


def advertised() -> tuple[dict[int, SecAggClient], SecAggServer]:
    clients = {node: SecAggClient(CONFIG, node) for node in CONFIG.participants}
    server = SecAggServer(CONFIG)
    for client in clients.values():
        server.receive_advertisement(client.advertise_keys())
    return clients, server


def masked(
    drop: tuple[int, ...] = (),
) -> tuple[dict[int, SecAggClient], SecAggServer, dict[int, UnmaskingRequest]]:
    clients, server = advertised()
    for node, keys in server.close_advertisements().items():
        server.receive_key_shares(clients[node].share_keys(keys))
    for node, delivery in server.close_key_sharing().items():
        if node not in drop:
            server.receive_masked_input(clients[node].masked_input(delivery, ONES * node))
    return clients, server, server.close_masked_inputs()


def test_an_advertisement_from_a_non_participant_is_refused() -> None:
    server = SecAggServer(CONFIG)

    with pytest.raises(InvalidSecAggMessage, match="node 9 is not a participant in this round"):
        server.receive_advertisement(KeyAdvertisement(9, bytes(32), bytes(32)))


def test_a_short_public_key_is_refused() -> None:
    server = SecAggServer(CONFIG)

    with pytest.raises(InvalidSecAggMessage, match="node 1: public key is 5 bytes, expected 32"):
        server.receive_advertisement(KeyAdvertisement(1, bytes(5), bytes(32)))


def test_a_repeated_advertisement_is_a_no_op_and_a_different_one_conflicts() -> None:
    server = SecAggServer(CONFIG)
    advert = SecAggClient(CONFIG, 1).advertise_keys()
    server.receive_advertisement(advert)

    server.receive_advertisement(advert)
    with pytest.raises(
        ConflictingSecAggMessage, match="node 1 already sent a different KeyAdvertisement"
    ):
        server.receive_advertisement(dataclasses.replace(advert, masking_public_key=bytes(32)))


def test_key_shares_must_cover_exactly_the_advertised_neighbours() -> None:
    clients, server = advertised()
    neighbour_keys = server.close_advertisements()
    shares = clients[0].share_keys(neighbour_keys[0])

    with pytest.raises(
        InvalidSecAggMessage,
        match=r"node 0 must send one share bundle to each of \[1, 2, 3, 4, 5\], got \[1, 2, 3, 4\]",
    ):
        server.receive_key_shares(KeyShares(0, shares.shares[:4]))


def test_key_shares_in_another_nodes_name_are_refused() -> None:
    clients, server = advertised()
    neighbour_keys = server.close_advertisements()
    shares = clients[0].share_keys(neighbour_keys[0])

    with pytest.raises(
        InvalidSecAggMessage, match="node 1 sent share bundles in another node's name"
    ):
        server.receive_key_shares(KeyShares(1, shares.shares))


def test_a_message_after_its_stage_closed_is_refused() -> None:
    server = SecAggServer(CONFIG)
    late = SecAggClient(CONFIG, 0).advertise_keys()
    for node in range(1, 6):
        server.receive_advertisement(SecAggClient(CONFIG, node).advertise_keys())
    server.close_advertisements()

    with pytest.raises(
        SecAggStageError,
        match="key advertisement from node 0 refused: the round is at stage share_keys",
    ):
        server.receive_advertisement(late)


def test_a_masked_input_of_the_wrong_length_is_refused() -> None:
    clients, server = advertised()
    for node, keys in server.close_advertisements().items():
        server.receive_key_shares(clients[node].share_keys(keys))
    server.close_key_sharing()

    with pytest.raises(
        InvalidSecAggMessage,
        match=r"node 0: masked input is 4 bytes, expected 32 \(8 uint32 words\)",
    ):
        server.receive_masked_input(MaskedInput(0, bytes(4)))


def test_a_repeated_masked_input_counts_once_and_a_different_one_conflicts() -> None:
    clients, server = advertised()
    for node, keys in server.close_advertisements().items():
        server.receive_key_shares(clients[node].share_keys(keys))
    inputs = {
        node: clients[node].masked_input(delivery, ONES * node)
        for node, delivery in server.close_key_sharing().items()
    }
    for message in inputs.values():
        server.receive_masked_input(message)

    server.receive_masked_input(inputs[2])
    with pytest.raises(
        ConflictingSecAggMessage, match="node 2 already sent a different masked input"
    ):
        server.receive_masked_input(MaskedInput(2, bytes(32)))
    for node, request in server.close_masked_inputs().items():
        server.receive_unmasking_shares(clients[node].unmasking(request))

    assert np.array_equal(server.finish().total, ONES * sum(range(6)))


def test_unmasking_shares_must_match_what_the_sender_holds() -> None:
    clients, server, requests = masked(drop=(5,))
    revealed = clients[0].unmasking(requests[0])
    swapped = dataclasses.replace(
        revealed,
        self_mask_shares=revealed.mask_key_shares,
        mask_key_shares=revealed.self_mask_shares,
    )

    with pytest.raises(
        InvalidSecAggMessage,
        match=r"node 0 must reveal self-mask shares of exactly \[1, 2, 3, 4\], got \[5\]",
    ):
        server.receive_unmasking_shares(swapped)


def test_consistent_shares_of_a_wrong_mask_key_are_caught_against_the_advertised_key() -> None:
    clients, server, requests = masked(drop=(5,))
    # Every holder reveals a share of the same wrong key: consistent, so only the key check sees it.
    forged = {share.x: share for share in split_secret(os.urandom(32), 3, [1, 2, 3, 4, 5])}
    for node in range(5):
        revealed = clients[node].unmasking(requests[node])
        fake = RevealedShare(owner=5, value=forged[node + 1].y_bytes())
        server.receive_unmasking_shares(dataclasses.replace(revealed, mask_key_shares=(fake,)))

    with pytest.raises(
        SecAggAbort, match="the reconstructed mask key of node 5 does not match its advertised key"
    ):
        server.finish()
    assert server.stage is ServerStage.ABORTED


def test_finish_aborts_when_too_few_survivors_reveal_their_shares() -> None:
    clients, server, requests = masked()
    for node in (0, 1, 2):
        server.receive_unmasking_shares(clients[node].unmasking(requests[node]))

    # Node 0 holds no share of its own seed: only nodes 1 and 2 revealed one.
    expected = "the self-mask seed of node 0 cannot be reconstructed: 2 neighbours revealed a share"
    with pytest.raises(SecAggAbort, match=f"{expected}, threshold 3"):
        server.finish()


def test_survivors_split_into_small_groups_abort_before_unmasking() -> None:
    config = SecAggConfig.create(
        tuple(range(10)), 8, b"g", b"run-s/round-2", degree=4, min_survivors=4
    )
    # Find four dropouts that cut the survivors into groups of fewer than four.
    drop = next(
        set(chosen)
        for chosen in itertools.combinations(range(10), 4)
        if max(map(len, config.graph.components(set(range(10)) - set(chosen)))) < 4
    )
    clients = {node: SecAggClient(config, node) for node in config.participants}
    server = SecAggServer(config)
    for client in clients.values():
        server.receive_advertisement(client.advertise_keys())
    for node, keys in server.close_advertisements().items():
        server.receive_key_shares(clients[node].share_keys(keys))
    for node, delivery in server.close_key_sharing().items():
        if node not in drop:
            server.receive_masked_input(clients[node].masked_input(delivery, ONES))

    with pytest.raises(
        SecAggAbort, match="share masks with no other survivor; unmasking would reveal the sum of"
    ):
        server.close_masked_inputs()


def test_a_neighbourhood_losing_its_majority_before_masking_aborts_early() -> None:
    config = SecAggConfig.create(tuple(range(20)), 8, b"g", b"run-s/round-3", degree=8)  # t = 5
    gone = set(sorted(config.graph.neighbours(0))[:4])
    server = SecAggServer(config)
    for node in set(range(20)) - gone:
        server.receive_advertisement(SecAggClient(config, node).advertise_keys())

    # Node 0 keeps 4 of 8 neighbours, below t = 5, so it is dropped; on a Harary ring its
    # neighbours then fall below t in turn, and the round stops before anyone masks.
    with pytest.raises(
        SecAggAbort,
        match="0 nodes advertised keys with at least 5 neighbours that also did, "
        "fewer than min_survivors 5",
    ):
        server.close_advertisements()


def test_a_wrong_self_mask_share_is_caught_when_more_than_t_shares_arrive() -> None:
    clients, server, requests = masked()
    for node in range(6):
        revealed = clients[node].unmasking(requests[node])
        if node == 1:
            wrong = dataclasses.replace(revealed.self_mask_shares[0], value=(7).to_bytes(33, "big"))
            revealed = dataclasses.replace(
                revealed, self_mask_shares=(wrong, *revealed.self_mask_shares[1:])
            )
        server.receive_unmasking_shares(revealed)

    with pytest.raises(
        SecAggAbort,
        match="the self-mask seed of node 0 could not be reconstructed: shares are inconsistent",
    ):
        server.finish()
