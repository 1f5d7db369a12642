import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedmesh.privacy.secagg import keys
from fedmesh.privacy.secagg.errors import InvalidSecAggMessage
from fedmesh.privacy.secagg.prg import expand_mask
from fedmesh.privacy.secagg.quantize import WORD


def test_both_ends_derive_the_same_pairwise_seed() -> None:
    alice, bob = X25519PrivateKey.generate(), X25519PrivateKey.generate()

    at_alice = keys.pairwise_mask_seed(keys.agree(alice, keys.public_bytes(bob)), b"run/3", 4, 9)
    at_bob = keys.pairwise_mask_seed(keys.agree(bob, keys.public_bytes(alice)), b"run/3", 9, 4)

    assert at_alice == at_bob
    assert len(at_alice) == 32


def test_derivations_are_separated_by_round_and_purpose() -> None:
    secret = keys.agree(X25519PrivateKey.generate(), keys.public_bytes(X25519PrivateKey.generate()))

    derived = {
        keys.pairwise_mask_seed(secret, b"run/3", 1, 2),
        keys.pairwise_mask_seed(secret, b"run/4", 1, 2),
        keys.pairwise_mask_seed(secret, b"run/3", 1, 3),
        keys.share_encryption_key(secret, b"run/3", 1, 2),
    }

    assert len(derived) == 4


def test_private_keys_round_trip_through_raw_bytes() -> None:
    key = X25519PrivateKey.generate()

    restored = keys.private_key_from_bytes(keys.private_bytes(key))

    assert keys.public_bytes(restored) == keys.public_bytes(key)


def test_a_low_order_public_key_is_refused() -> None:
    with pytest.raises(InvalidSecAggMessage, match="public key is a low-order point"):
        keys.agree(X25519PrivateKey.generate(), bytes(32))


def test_a_short_public_key_is_refused() -> None:
    with pytest.raises(InvalidSecAggMessage, match="an X25519 public key is 32 bytes, got 31"):
        keys.agree(X25519PrivateKey.generate(), bytes(31))


def test_masks_are_deterministic_per_seed_and_look_uniform() -> None:
    seed = bytes(range(32))

    mask = expand_mask(seed, 100_000)

    assert mask.dtype == WORD
    assert mask.shape == (100_000,)
    assert np.array_equal(mask, expand_mask(seed, 100_000))
    assert np.array_equal(mask[:10], expand_mask(seed, 10))
    assert not np.array_equal(mask, expand_mask(bytes(31) + b"\x01", 100_000))
    assert float(mask.mean()) / 2**32 == pytest.approx(0.5, abs=0.005)


def test_mask_seed_length_is_checked() -> None:
    with pytest.raises(ValueError, match="a mask seed is 32 bytes, got 16"):
        expand_mask(bytes(16), 4)
