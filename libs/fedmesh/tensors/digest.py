"""SHA-256 digests over canonical payloads."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def digest_chunks(chunks: Iterable[bytes]) -> str:
    """Hex SHA-256 over a payload given in chunks."""
    hasher = hashlib.sha256()
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.hexdigest()
