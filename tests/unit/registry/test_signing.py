"""The registry's Ed25519 key: created once with mode 0600, kept, verifies its signatures."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from fedmesh.errors import InvalidArgument
from fedmesh.services.registry.signing import RecordSigner


def test_the_key_is_created_once_with_owner_only_permissions(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "signing.key"

    first = RecordSigner.load_or_create(path)
    second = RecordSigner.load_or_create(path)

    assert path.stat().st_mode & 0o777 == 0o600
    assert first.key_id == second.key_id
    assert len(first.public_key_raw) == 32
    assert [p.name for p in path.parent.iterdir()] == ["signing.key"]


def test_signatures_verify_only_for_the_signed_bytes_and_key(tmp_path: Path) -> None:
    signer = RecordSigner.load_or_create(tmp_path / "a.key")
    other = RecordSigner.load_or_create(tmp_path / "b.key")
    signature = signer.sign(b"record")

    assert signer.verify(signature, b"record")
    assert not signer.verify(signature, b"recorD")
    assert not other.verify(signature, b"record")


def test_a_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    path.write_text("hello")

    with pytest.raises(InvalidArgument, match="is not a PEM private key"):
        RecordSigner.load_or_create(path)


def test_a_key_of_another_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    path.write_bytes(
        generate_private_key(SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )

    with pytest.raises(InvalidArgument) as info:
        RecordSigner.load_or_create(path)

    assert str(info.value) == f"{path} holds another kind of key; expected Ed25519"
