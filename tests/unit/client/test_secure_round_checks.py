"""A node's checks on what the aggregator tells it in a secure round, before it shares secrets."""

import os
from collections.abc import Callable
from dataclasses import replace

import pytest

from fedmesh.client.secure_aggregation import SecureRoundRef
from fedmesh.client.secure_round import check_neighbour_signatures, check_participants
from fedmesh.client.signing import NodeSigner
from fedmesh.errors import FailedPrecondition
from fedmesh.privacy.secagg import KeyAdvertisement, NeighbourKeys

CONTEXT = b"fedmesh/run-1/1/bucket/0"
NODES = ("a", "b", "c")
SIGNERS = {node: NodeSigner.generate() for node in NODES}
KEYS = {node: signer.public_key for node, signer in SIGNERS.items()}
REF = SecureRoundRef("run-1", 1, "a")


def advert(index: int) -> KeyAdvertisement:
    enc, mask = os.urandom(32), os.urandom(32)
    signature = SIGNERS[NODES[index]].sign_advertisement(CONTEXT, index, enc, mask)
    return KeyAdvertisement(index, enc, mask, signature)


def substituted_keys(real: KeyAdvertisement) -> KeyAdvertisement:
    """A man in the middle's own keys under the neighbour's signature."""
    return replace(real, encryption_public_key=os.urandom(32))


def resigned_by_the_aggregator(real: KeyAdvertisement) -> KeyAdvertisement:
    attacker = NodeSigner.generate()
    mask = os.urandom(32)
    signature = attacker.sign_advertisement(CONTEXT, real.node, real.encryption_public_key, mask)
    return replace(real, masking_public_key=mask, signature=signature)


def moved_to_another_index(real: KeyAdvertisement) -> KeyAdvertisement:
    return replace(real, node=2)


def unsigned(real: KeyAdvertisement) -> KeyAdvertisement:
    return replace(real, signature=b"")


def test_honest_neighbour_advertisements_pass() -> None:
    check_neighbour_signatures(REF, CONTEXT, NeighbourKeys(0, (advert(1), advert(2))), NODES, KEYS)


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        (substituted_keys, "b (index 1)"),
        (resigned_by_the_aggregator, "b (index 1)"),
        (moved_to_another_index, "c (index 2)"),
        (unsigned, "b (index 1)"),
    ],
)
def test_a_tampered_advertisement_makes_the_node_leave(
    tamper: Callable[[KeyAdvertisement], KeyAdvertisement], named: str
) -> None:
    keys = NeighbourKeys(0, (tamper(advert(1)),))

    with pytest.raises(FailedPrecondition) as refused:
        check_neighbour_signatures(REF, CONTEXT, keys, NODES, KEYS)

    assert str(refused.value) == (
        f"round 1 of run run-1: the key advertisement of neighbour {named} is not signed by the "
        "key the coordinator holds for it; the aggregator may be substituting keys, so node "
        "'a' leaves the round before sharing any secret"
    )


def test_an_advertisement_from_an_index_beyond_the_participants_is_refused() -> None:
    stranger = replace(advert(1), node=7)

    with pytest.raises(FailedPrecondition, match=r"neighbour unknown \(index 7\)"):
        check_neighbour_signatures(REF, CONTEXT, NeighbourKeys(0, (stranger,)), NODES, KEYS)


def test_the_coordinators_participants_in_index_order_pass() -> None:
    check_participants(REF, ["a", "b", "c"], 0, KEYS)


@pytest.mark.parametrize(
    "participants",
    [["a", "b"], ["a", "b", "c", "mallory"], ["a", "c", "b"], ["a", "b", "mallory"]],
)
def test_participants_other_than_the_coordinators_are_refused(participants: list[str]) -> None:
    with pytest.raises(FailedPrecondition) as refused:
        check_participants(REF, participants, 0, KEYS)

    assert str(refused.value) == (
        f"round 1 of run run-1: the aggregator lists {len(participants)} participants that "
        "differ from the 3 the coordinator named in the task; the aggregator may be "
        "substituting nodes, so node 'a' leaves the round"
    )


@pytest.mark.parametrize("index", [1, 3])
def test_an_index_that_is_not_the_nodes_place_is_refused(index: int) -> None:
    with pytest.raises(FailedPrecondition) as refused:
        check_participants(REF, ["a", "b", "c"], index, KEYS)

    assert str(refused.value) == (
        f"round 1 of run run-1: the aggregator gave node 'a' index {index}, which is not its "
        "place among the participants; it leaves the round"
    )
