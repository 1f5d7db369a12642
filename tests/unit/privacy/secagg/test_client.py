"""SecAggClient: stage order, checks on what the server sends, and what it reveals."""

import dataclasses

import numpy as np
import pytest

from fedmesh.privacy.secagg import (
    ClientStage,
    InvalidSecAggMessage,
    NeighbourKeys,
    SecAggAbort,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    SecAggStageError,
    ShareDelivery,
    UnmaskingRequest,
)
from fedmesh.privacy.secagg.quantize import WORD

CONFIG = SecAggConfig.create(tuple(range(6)), 8, b"g", b"run-c/round-1")  # complete graph, t = 3


def prepared_round() -> tuple[dict[int, SecAggClient], SecAggServer, dict[int, NeighbourKeys]]:
    clients = {node: SecAggClient(CONFIG, node) for node in CONFIG.participants}
    server = SecAggServer(CONFIG)
    for client in clients.values():
        server.receive_advertisement(client.advertise_keys())
    return clients, server, server.close_advertisements()


def through_key_sharing() -> tuple[dict[int, SecAggClient], SecAggServer, dict[int, ShareDelivery]]:
    clients, server, neighbour_keys = prepared_round()
    for node, keys in neighbour_keys.items():
        server.receive_key_shares(clients[node].share_keys(keys))
    return clients, server, server.close_key_sharing()


def test_stages_must_be_called_in_order() -> None:
    client = SecAggClient(CONFIG, 0)

    with pytest.raises(
        SecAggStageError, match="node 0: share_keys called while at stage advertise_keys"
    ):
        client.share_keys(NeighbourKeys(0, ()))
    assert client.stage is ClientStage.ADVERTISE_KEYS


def test_a_non_participant_cannot_be_a_client() -> None:
    with pytest.raises(ValueError, match="node 6 is not a participant of this round"):
        SecAggClient(CONFIG, 6)


def test_advertisements_from_non_neighbours_abort_the_client() -> None:
    clients, _, neighbour_keys = prepared_round()
    stranger = dataclasses.replace(neighbour_keys[0].advertisements[0], node=99)

    with pytest.raises(
        InvalidSecAggMessage, match="unexpected or repeated key advertisement from node 99"
    ):
        clients[0].share_keys(NeighbourKeys(0, (stranger,)))
    assert clients[0].stage is ClientStage.ABORTED


def test_too_few_neighbours_with_keys_abort_the_client() -> None:
    clients, _, neighbour_keys = prepared_round()

    with pytest.raises(SecAggAbort, match="node 0: only 2 neighbours advertised keys, threshold 3"):
        clients[0].share_keys(NeighbourKeys(0, neighbour_keys[0].advertisements[:2]))


def test_repeated_public_keys_are_refused() -> None:
    clients, _, neighbour_keys = prepared_round()
    adverts = neighbour_keys[0].advertisements
    copied = dataclasses.replace(adverts[1], masking_public_key=adverts[0].masking_public_key)

    with pytest.raises(
        InvalidSecAggMessage, match="public keys of this round must all be distinct"
    ):
        clients[0].share_keys(NeighbourKeys(0, (adverts[0], copied, *adverts[2:])))


def test_a_low_order_neighbour_key_is_refused() -> None:
    clients, _, neighbour_keys = prepared_round()
    adverts = neighbour_keys[0].advertisements
    degenerate = dataclasses.replace(adverts[0], encryption_public_key=bytes(32))

    with pytest.raises(
        InvalidSecAggMessage, match=f"node {adverts[0].node}: public key is a low-order point"
    ):
        clients[0].share_keys(NeighbourKeys(0, (degenerate, *adverts[1:])))


def test_messages_for_another_node_are_refused() -> None:
    clients, _, neighbour_keys = prepared_round()

    with pytest.raises(InvalidSecAggMessage, match="message addressed to node 1, this is node 0"):
        clients[0].share_keys(neighbour_keys[1])


def test_a_tampered_share_bundle_fails_authentication() -> None:
    clients, _, deliveries = through_key_sharing()
    first = deliveries[0].shares[0]
    flipped = bytes([first.ciphertext[0] ^ 1]) + first.ciphertext[1:]
    tampered = dataclasses.replace(first, ciphertext=flipped)

    with pytest.raises(
        InvalidSecAggMessage,
        match=f"share from node {first.sender} to node 0 failed authentication",
    ):
        clients[0].masked_input(
            ShareDelivery(0, (tampered, *deliveries[0].shares[1:])), np.zeros(8, dtype=WORD)
        )


def test_a_bundle_redirected_to_another_node_fails_authentication() -> None:
    clients, _, deliveries = through_key_sharing()
    # Node 2's bundle for node 1, relabelled as if it were for node 0.
    stolen = next(share for share in deliveries[1].shares if share.sender == 2)
    relabelled = dataclasses.replace(stolen, recipient=0)
    others = tuple(share for share in deliveries[0].shares if share.sender != 2)

    with pytest.raises(
        InvalidSecAggMessage, match="share from node 2 to node 0 failed authentication"
    ):
        clients[0].masked_input(ShareDelivery(0, (relabelled, *others)), np.zeros(8, dtype=WORD))


def test_a_wrong_update_shape_is_refused_without_changing_the_stage() -> None:
    clients, _, deliveries = through_key_sharing()

    with pytest.raises(
        ValueError,
        match=r"quantised_update must be uint32 of shape \(8,\), got int64 of shape \(8,\)",
    ):
        clients[0].masked_input(deliveries[0], np.zeros(8, dtype=np.int64))
    assert clients[0].stage is ClientStage.MASKED_INPUT


def test_unmasking_reveals_exactly_one_share_per_partner() -> None:
    clients, _, deliveries = through_key_sharing()
    for node, delivery in deliveries.items():
        clients[node].masked_input(delivery, np.zeros(8, dtype=WORD))

    revealed = clients[0].unmasking(UnmaskingRequest(0, (0, 1, 2, 3)))

    assert [share.owner for share in revealed.self_mask_shares] == [1, 2, 3]
    assert [share.owner for share in revealed.mask_key_shares] == [4, 5]
    assert all(
        len(share.value) == 33 for share in revealed.self_mask_shares + revealed.mask_key_shares
    )
    assert clients[0].stage is ClientStage.DONE


def test_unmasking_refuses_a_survivor_list_without_this_node() -> None:
    clients, _, deliveries = through_key_sharing()
    clients[0].masked_input(deliveries[0], np.zeros(8, dtype=WORD))

    with pytest.raises(
        InvalidSecAggMessage, match="node 0 sent a masked input but is not listed as a survivor"
    ):
        clients[0].unmasking(UnmaskingRequest(0, (1, 2, 3)))


def test_unmasking_aborts_below_min_survivors() -> None:
    clients, _, deliveries = through_key_sharing()
    clients[0].masked_input(deliveries[0], np.zeros(8, dtype=WORD))

    with pytest.raises(SecAggAbort, match="2 survivors, fewer than min_survivors 3"):
        clients[0].unmasking(UnmaskingRequest(0, (0, 1)))
    assert clients[0].stage is ClientStage.ABORTED


def test_unmasking_aborts_when_every_mask_partner_dropped() -> None:
    config = SecAggConfig.create(
        tuple(range(8)), 8, b"g", b"run-c/round-2", degree=4, min_survivors=2
    )
    clients = {node: SecAggClient(config, node) for node in config.participants}
    server = SecAggServer(config)
    for client in clients.values():
        server.receive_advertisement(client.advertise_keys())
    for node, keys in server.close_advertisements().items():
        server.receive_key_shares(clients[node].share_keys(keys))
    clients[0].masked_input(server.close_key_sharing()[0], np.zeros(8, dtype=WORD))
    stranger = min(set(range(1, 8)) - config.graph.neighbours(0))

    # Revealing node 0's self-mask share now would unmask node 0's input on its own.
    with pytest.raises(SecAggAbort, match="node 0 has no surviving mask partner"):
        clients[0].unmasking(UnmaskingRequest(0, (0, stranger)))
