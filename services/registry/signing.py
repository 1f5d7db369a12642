"""The registry's Ed25519 key: generated on first start, kept in a 0600 file, signs records."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedmesh.errors import InvalidArgument

log = logging.getLogger(__name__)


class RecordSigner:
    """Signs and verifies canonical records with one Ed25519 key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self._public = key.public_key()
        self.public_key_raw = self._public.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = hashlib.sha256(self.public_key_raw).hexdigest()[:16]

    @classmethod
    def load_or_create(cls, path: Path) -> RecordSigner:
        """Load the key at ``path``, or generate it there (mode 0600) on first start."""
        if not path.exists():
            _create(path)
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "registry signing key is readable by other users",
                extra={"fields": {"path": str(path)}},
            )
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except ValueError:
            raise InvalidArgument(f"{path} is not a PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidArgument(f"{path} holds another kind of key; expected Ed25519")
        signer = cls(key)
        log.info("registry signing key loaded", extra={"fields": {"key_id": signer.key_id}})
        return signer

    def sign(self, message: bytes) -> bytes:
        """The 64-byte signature of ``message``."""
        return self._key.sign(message)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` is this key's over ``message``."""
        try:
            self._public.verify(signature, message)
        except InvalidSignature:
            return False
        return True


def _create(path: Path) -> None:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # link, not rename: a replica that created the key first keeps its key.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
