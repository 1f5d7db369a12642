import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from numpy.typing import NDArray

from fedmesh.privacy.secagg import keys
from fedmesh.privacy.secagg.errors import InvalidSecAggMessage
from fedmesh.privacy.secagg.prg import MaskExpander
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


def mask_of(seed: bytes, length: int) -> NDArray[np.uint32]:
    mask = np.zeros(length, dtype=WORD)
    MaskExpander(length).add_to(mask, seed)
    return mask


def test_masks_are_deterministic_per_seed_and_look_uniform() -> None:
    seed = bytes(range(32))

    mask = mask_of(seed, 100_000)

    assert mask.dtype == WORD
    assert np.array_equal(mask, mask_of(seed, 100_000))
    assert np.array_equal(mask[:10], mask_of(seed, 10))
    assert not np.array_equal(mask, mask_of(bytes(31) + b"\x01", 100_000))
    assert float(mask.mean()) / 2**32 == pytest.approx(0.5, abs=0.005)


def test_subtracting_a_mask_undoes_adding_it_and_the_buffer_is_reused_safely() -> None:
    expander = MaskExpander(1000)
    target = np.arange(1000, dtype=WORD)
    first, second = bytes(32), bytes(range(32))

    expander.add_to(target, first)
    expander.add_to(target, second)
    expander.subtract_from(target, first)
    expander.subtract_from(target, second)

    assert np.array_equal(target, np.arange(1000, dtype=WORD))


def test_masks_wrap_mod_2_to_the_32() -> None:
    target = np.full(50_000, 2**32 - 1, dtype=WORD)

    MaskExpander(50_000).add_to(target, bytes(32))

    assert np.array_equal(target, mask_of(bytes(32), 50_000) - np.uint32(1))


def test_mask_seed_and_target_are_checked() -> None:
    expander = MaskExpander(4)

    with pytest.raises(ValueError, match="a mask seed is 32 bytes, got 16"):
        expander.add_to(np.zeros(4, dtype=WORD), bytes(16))
    with pytest.raises(
        ValueError, match=r"target must be uint32 of shape \(4,\), got uint32 of shape \(5,\)"
    ):
        expander.subtract_from(np.zeros(5, dtype=WORD), bytes(32))
    with pytest.raises(ValueError, match="mask length must be >= 1, got 0"):
        MaskExpander(0)
