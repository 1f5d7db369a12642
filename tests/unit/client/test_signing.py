"""The node's Ed25519 key: canonical messages, sign and verify, and the key file on disk."""

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedmesh.client.signing import (
    NONCE_BYTES,
    NodeSigner,
    SigningKeyError,
    advertisement_message,
    load_or_create_signing_key,
    update_message,
    verify_advertisement,
    verify_update,
)

DIGEST = "0f" * 32


def test_the_update_message_is_the_purpose_and_each_field_length_prefixed() -> None:
    message = update_message("run-1", 3, "n1", b"\x01\x02", DIGEST)

    assert message == (
        b"\x00\x00\x00\x11fedmesh/update/v1"
        + b"\x00\x00\x00\x05run-1"
        + b"\x00\x00\x00\x08" + (3).to_bytes(8, "big")
        + b"\x00\x00\x00\x02n1"
        + b"\x00\x00\x00\x02\x01\x02"
        + b"\x00\x00\x00\x40" + DIGEST.encode()
    )  # fmt: skip


def test_moving_bytes_between_fields_changes_the_message() -> None:
    assert update_message("run-1", 3, "n1", b"", DIGEST) != update_message(
        "run-", 3, "1n1", b"", DIGEST
    )
    assert advertisement_message(b"ctx", 1, b"ab", b"c") != advertisement_message(
        b"ctx", 1, b"a", b"bc"
    )


def test_the_advertisement_message_is_the_purpose_and_each_field_length_prefixed() -> None:
    message = advertisement_message(b"ctx", 7, b"E" * 32, b"M" * 32)

    assert message == (
        b"\x00\x00\x00\x1ffedmesh/secagg-advertisement/v1"
        + b"\x00\x00\x00\x03ctx"
        + b"\x00\x00\x00\x04\x00\x00\x00\x07"
        + b"\x00\x00\x00\x20" + b"E" * 32
        + b"\x00\x00\x00\x20" + b"M" * 32
    )  # fmt: skip


def test_a_signed_update_verifies_and_any_changed_field_does_not() -> None:
    signer = NodeSigner.generate()

    signed = signer.sign_update("run-1", 3, "n1", DIGEST)
    key, sig, nonce = signer.public_key, signed.signature, signed.nonce

    assert len(nonce) == NONCE_BYTES
    assert signer.sign_update("run-1", 3, "n1", DIGEST).nonce != nonce
    assert verify_update(key, sig, "run-1", 3, "n1", nonce, DIGEST)
    assert not verify_update(key, sig, "run-2", 3, "n1", nonce, DIGEST)
    assert not verify_update(key, sig, "run-1", 4, "n1", nonce, DIGEST)
    assert not verify_update(key, sig, "run-1", 3, "n2", nonce, DIGEST)
    assert not verify_update(key, sig, "run-1", 3, "n1", bytes(NONCE_BYTES), DIGEST)
    assert not verify_update(key, sig, "run-1", 3, "n1", nonce, "ab" * 32)
    assert not verify_update(NodeSigner.generate().public_key, sig, "run-1", 3, "n1", nonce, DIGEST)
    assert not verify_update(key, sig[:-1], "run-1", 3, "n1", nonce, DIGEST)
    assert not verify_update(key[:31], sig, "run-1", 3, "n1", nonce, DIGEST)


def test_a_signed_advertisement_verifies_and_a_substituted_key_does_not() -> None:
    signer = NodeSigner.generate()
    enc, mask = os.urandom(32), os.urandom(32)

    signature = signer.sign_advertisement(b"ctx", 2, enc, mask)

    assert verify_advertisement(signer.public_key, signature, b"ctx", 2, enc, mask)
    assert not verify_advertisement(signer.public_key, signature, b"ctx", 2, os.urandom(32), mask)
    assert not verify_advertisement(signer.public_key, signature, b"ctx", 2, enc, os.urandom(32))
    assert not verify_advertisement(signer.public_key, signature, b"ctx", 3, enc, mask)
    assert not verify_advertisement(signer.public_key, signature, b"other", 2, enc, mask)
    assert not verify_advertisement(signer.public_key, b"", b"ctx", 2, enc, mask)


def test_the_signer_never_shows_its_private_key() -> None:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    signer = NodeSigner(key)

    assert repr(signer) == f"NodeSigner(public_key={signer.public_key.hex()})"
    assert private.hex() not in repr(signer)


def test_a_missing_key_file_is_created_0600_and_loaded_the_same_next_time(tmp_path: Path) -> None:
    path = tmp_path / "node.pem"

    created = load_or_create_signing_key(path)
    loaded = load_or_create_signing_key(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert loaded.public_key == created.public_key
    signed = loaded.sign_update("run-1", 1, "n1", DIGEST)
    assert verify_update(
        created.public_key, signed.signature, "run-1", 1, "n1", signed.nonce, DIGEST
    )


def test_a_key_written_by_openssl_style_pkcs8_pem_is_accepted(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "node.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o400)

    signer = load_or_create_signing_key(path)

    assert signer.public_key == key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def test_a_key_file_others_may_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.pem"
    load_or_create_signing_key(path)
    path.chmod(0o644)

    with pytest.raises(SigningKeyError) as refused:
        load_or_create_signing_key(path)

    assert str(refused.value) == (
        f"signing key {path} has mode 0644; other users could use it. "
        f"Restrict it with: chmod 600 {path}"
    )


def test_a_key_file_that_is_not_an_ed25519_pem_key_is_refused(tmp_path: Path) -> None:
    garbage, ecdsa = tmp_path / "garbage.pem", tmp_path / "ecdsa.pem"
    garbage.write_bytes(b"not a key")
    ecdsa.write_bytes(
        generate_private_key(SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    for path in (garbage, ecdsa):
        path.chmod(0o600)

    with pytest.raises(SigningKeyError, match="is not an unencrypted PEM private key"):
        load_or_create_signing_key(garbage)
    with pytest.raises(SigningKeyError) as wrong:
        load_or_create_signing_key(ecdsa)

    assert str(wrong.value) == f"signing key {ecdsa} is not an Ed25519 key"
