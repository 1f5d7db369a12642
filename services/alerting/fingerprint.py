"""Alert identity: label validation and the fingerprint Alertmanager computes.

The fingerprint is FNV-1a 64 over the sorted label names and values, each
followed by the byte 0xff — the same as Prometheus' ``LabelSet.Fingerprint``,
so an alert has the same fingerprint here and in Alertmanager.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from fedmesh.errors import InvalidArgument

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK = (1 << 64) - 1
_SEPARATOR = 0xFF

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
MAX_LABELS = 32
MAX_NAME_CHARS = 128
MAX_LABEL_VALUE_CHARS = 1024
MAX_ANNOTATION_VALUE_CHARS = 8192


def _fnv(digest: int, data: bytes) -> int:
    for byte in data:
        digest = ((digest ^ byte) * _FNV_PRIME) & _MASK
    return digest


def fingerprint(labels: Mapping[str, str]) -> str:
    """The 16-hex-digit fingerprint of a label set (Alertmanager's)."""
    digest = _FNV_OFFSET
    for name in sorted(labels):
        digest = _fnv(digest, name.encode())
        digest = ((digest ^ _SEPARATOR) * _FNV_PRIME) & _MASK
        digest = _fnv(digest, labels[name].encode())
        digest = ((digest ^ _SEPARATOR) * _FNV_PRIME) & _MASK
    return f"{digest:016x}"


def check_label_name(name: str, what: str = "label") -> None:
    """Refuse a name that is not ``[a-zA-Z_][a-zA-Z0-9_]*`` or starts with ``__`` (reserved)."""
    if not LABEL_NAME.match(name) or len(name) > MAX_NAME_CHARS:
        raise InvalidArgument(
            f"{what} name {name[:MAX_NAME_CHARS]!r} is invalid; expected [a-zA-Z_][a-zA-Z0-9_]* "
            f"of at most {MAX_NAME_CHARS} characters"
        )
    if name.startswith("__"):
        raise InvalidArgument(
            f"{what} name {name!r} is invalid; names starting with __ are reserved"
        )


def _check_pairs(pairs: Mapping[str, str], what: str, max_pairs: int, max_value: int) -> None:
    if len(pairs) > max_pairs:
        raise InvalidArgument(f"{len(pairs)} {what}s given; at most {max_pairs} are accepted")
    for name, value in pairs.items():
        check_label_name(name, what)
        if len(value) > max_value:
            raise InvalidArgument(
                f"{what} {name!r} has {len(value)} characters; at most {max_value} are accepted"
            )


def check_labels(labels: Mapping[str, str]) -> None:
    """Refuse too many labels, invalid names, or over-long values."""
    _check_pairs(labels, "label", MAX_LABELS, MAX_LABEL_VALUE_CHARS)


def check_annotations(annotations: Mapping[str, str]) -> None:
    """Refuse too many annotations, invalid names, or over-long values."""
    _check_pairs(annotations, "annotation", 2 * MAX_LABELS, MAX_ANNOTATION_VALUE_CHARS)
