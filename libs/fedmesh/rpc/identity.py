"""Who is calling: the SPIFFE ID of the peer's verified certificate, matched exactly."""

from __future__ import annotations

from typing import Any

from fedmesh.errors import PermissionDenied, Unauthenticated


def peer_identity(context: Any) -> str | None:
    """The caller's SPIFFE ID from its verified client certificate; None without mTLS."""
    auth = context.auth_context() or {}
    for key in ("peer_spiffe_id", "x509_subject_alternative_name"):
        for value in auth.get(key, []):
            text = value.decode() if isinstance(value, bytes) else str(value)
            if text.startswith("spiffe://"):
                return text
    return None


def require_identity(context: Any, expected: str, *, tls_required: bool) -> None:
    """Refuse unless the caller is exactly ``expected`` (no prefix or suffix matches).

    Without mTLS (the dev profile, ``tls_required`` False) there is nothing to check.
    """
    actual = peer_identity(context)
    if actual is None:
        if tls_required:
            raise Unauthenticated("this call needs a client certificate with a SPIFFE ID")
        return
    if actual != expected:
        raise PermissionDenied(f"caller {actual} may not act as {expected}")
