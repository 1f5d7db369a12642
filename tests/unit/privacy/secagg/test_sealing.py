import dataclasses
import os
from collections.abc import Callable

import pytest

from fedmesh.privacy.secagg.errors import InvalidSecAggMessage
from fedmesh.privacy.secagg.messages import EncryptedShare
from fedmesh.privacy.secagg.sealing import open_shares, seal_shares
from fedmesh.privacy.secagg.shamir import ShamirShare, split_secret

KEY = os.urandom(32)


def sealed_pair() -> tuple[ShamirShare, ShamirShare, EncryptedShare]:
    mask_key_share = split_secret(os.urandom(32), 2, [8, 9])[0]
    self_mask_share = split_secret(os.urandom(32), 2, [8, 9])[0]
    return (
        mask_key_share,
        self_mask_share,
        seal_shares(KEY, b"run/1", 3, 7, mask_key_share, self_mask_share),
    )


def test_sealed_shares_open_to_the_same_shares_at_the_recipients_point() -> None:
    mask_key_share, self_mask_share, message = sealed_pair()

    opened = open_shares(KEY, b"run/1", message)

    assert opened == (mask_key_share, self_mask_share)
    assert opened[0].x == 8


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: dataclasses.replace(m, sender=4),
        lambda m: dataclasses.replace(m, nonce=os.urandom(12)),
        lambda m: dataclasses.replace(
            m, ciphertext=m.ciphertext[:-1] + bytes([m.ciphertext[-1] ^ 1])
        ),
    ],
)
def test_any_change_to_the_envelope_fails_authentication(
    tamper: Callable[[EncryptedShare], EncryptedShare],
) -> None:
    _, _, message = sealed_pair()

    with pytest.raises(InvalidSecAggMessage, match="failed authentication"):
        open_shares(KEY, b"run/1", tamper(message))


def test_shares_sealed_for_another_round_fail_authentication() -> None:
    _, _, message = sealed_pair()

    with pytest.raises(
        InvalidSecAggMessage, match="share from node 3 to node 7 failed authentication"
    ):
        open_shares(KEY, b"run/2", message)


def test_a_short_nonce_is_refused() -> None:
    _, _, message = sealed_pair()

    with pytest.raises(InvalidSecAggMessage, match="nonce is 4 bytes, expected 12"):
        open_shares(KEY, b"run/1", dataclasses.replace(message, nonce=bytes(4)))
