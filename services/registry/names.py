"""What model names, aliases and digests may look like (they end up in Redis keys and paths)."""

from __future__ import annotations

import re

from fedmesh.errors import InvalidArgument

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ALIAS = re.compile(r"[a-z][a-z0-9-]{0,31}")
_DIGEST = re.compile(r"[0-9a-f]{64}")

PRODUCTION = "production"
CANDIDATE = "candidate"


def check_name(name: str) -> str:
    """Refuse a model name that is not 1–128 of ``A-Z a-z 0-9 . _ -`` starting alphanumeric."""
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"model name {name!r} is invalid; expected 1-128 characters of letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    return name


def check_alias(alias: str) -> str:
    """Refuse an alias that is not 1–32 of ``a-z 0-9 -`` starting with a letter."""
    if not _ALIAS.fullmatch(alias):
        raise InvalidArgument(
            f"alias {alias!r} is invalid; expected 1-32 lowercase letters, digits or '-', "
            "starting with a letter (e.g. 'production', 'candidate')"
        )
    return alias


def is_digest(text: str) -> bool:
    """Whether ``text`` is 64 lowercase hex characters (a SHA-256)."""
    return _DIGEST.fullmatch(text) is not None


def check_digest(digest: str, what: str = "digest") -> str:
    """Refuse anything but 64 lowercase hex characters (a SHA-256)."""
    if not is_digest(digest):
        raise InvalidArgument(f"{what} {digest!r} is not a SHA-256: expected 64 lowercase hex")
    return digest


def check_version(version: int, what: str = "version") -> int:
    """Refuse a negative version number (0 means "latest" or "none" where allowed)."""
    if version < 0:
        raise InvalidArgument(f"{what} {version} is negative; versions start at 1")
    return version
