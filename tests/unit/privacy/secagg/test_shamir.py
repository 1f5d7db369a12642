import itertools
import os

import pytest

from fedmesh.privacy.secagg.shamir import (
    FIELD_PRIME,
    ShamirShare,
    interpolate_at_zero,
    reconstruct_secret,
    split_secret,
)

SECRET = bytes.fromhex("ff" * 32)  # the largest 32-byte secret still fits the field


def test_any_threshold_shares_reconstruct_the_secret() -> None:
    shares = split_secret(SECRET, 4, [3, 5, 8, 13, 21, 34, 55])

    for subset in itertools.combinations(shares, 4):
        assert reconstruct_secret(subset, 4) == SECRET
    assert reconstruct_secret(shares, 4) == SECRET


def test_one_share_fewer_than_the_threshold_interpolates_to_a_wrong_value() -> None:
    secret = os.urandom(32)
    shares = split_secret(secret, 4, range(1, 8))

    for subset in itertools.combinations(shares, 3):
        assert interpolate_at_zero(subset) != int.from_bytes(secret, "big")


def test_reconstruction_refuses_fewer_shares_than_the_threshold() -> None:
    shares = split_secret(SECRET, 3, [1, 2, 3])

    with pytest.raises(ValueError, match="need at least 3 shares to reconstruct, got 2"):
        reconstruct_secret(shares[:2], 3)


def test_shares_of_the_same_secret_differ_between_sharings() -> None:
    first = split_secret(SECRET, 2, [1, 2])
    second = split_secret(SECRET, 2, [1, 2])

    assert first != second


def test_share_values_round_trip_through_33_bytes() -> None:
    share = split_secret(SECRET, 2, [9, 10])[0]

    assert len(share.y_bytes()) == 33
    assert ShamirShare.from_y_bytes(9, share.y_bytes()) == share


def test_a_share_value_outside_the_field_is_refused() -> None:
    with pytest.raises(ValueError, match="not a field element"):
        ShamirShare.from_y_bytes(1, FIELD_PRIME.to_bytes(33, "big"))
    with pytest.raises(ValueError, match="a share value is 33 bytes, got 32"):
        ShamirShare.from_y_bytes(1, bytes(32))


def test_inconsistent_shares_are_detected_when_they_leave_the_secret_range() -> None:
    # The line through (1, 0) and (2, 1) is x − 1, which is p − 1 ≥ 2^256 at 0.
    shares = [ShamirShare(1, 0), ShamirShare(2, 1)]

    with pytest.raises(ValueError, match="shares are inconsistent"):
        reconstruct_secret(shares, 2)


@pytest.mark.parametrize(
    ("secret", "threshold", "xs", "message"),
    [
        (bytes(31), 2, [1, 2], "secret must be 32 bytes, got 31"),
        (SECRET, 2, [1, 1], "share points must be distinct"),
        (SECRET, 2, [0, 1], "x = 0 would reveal the secret"),
        (SECRET, 3, [1, 2], r"threshold must be in \[1, 2\] for 2 shares, got 3"),
    ],
)
def test_invalid_sharings_are_refused(
    secret: bytes, threshold: int, xs: list[int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        split_secret(secret, threshold, xs)


def test_a_wrong_share_beyond_the_threshold_is_detected() -> None:
    shares = list(split_secret(SECRET, 3, [1, 2, 3, 4, 5]))
    shares[4] = ShamirShare(5, (shares[4].y + 1) % FIELD_PRIME)

    with pytest.raises(ValueError, match="shares are inconsistent: at least one share is wrong"):
        reconstruct_secret(shares, 3)
    assert reconstruct_secret(shares[:4], 3) == SECRET
