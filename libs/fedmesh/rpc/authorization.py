"""Per-RPC authorization by the caller's SPIFFE ID (DESIGN §5).

A servicer checks at the top of each RPC one of four policies: the caller is the
node its request names (a node acts only as itself); the caller is one of the
named services; the caller is an admin (``admin/<name>``); or any authenticated
caller (reads). Identities are compared whole, never by prefix. Without mTLS
(the dev profile: ``tls_required`` False and no client certificate) there is
nothing to check; whenever the caller presents an identity it is checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedmesh.errors import InvalidArgument, PermissionDenied, Unauthenticated
from fedmesh.rpc.certs import spiffe_id
from fedmesh.rpc.identity import peer_identity, require_identity

ANY_ADMIN = f"an admin ({spiffe_id('admin', '<name>')})"
"""How a refusal names the admin identities it expected."""


def admin_name(identity: str) -> str | None:
    """The admin's name when ``identity`` is exactly ``spiffe://<trust domain>/admin/<name>``."""
    name = identity.rpartition("/")[2]
    try:
        expected = spiffe_id("admin", name)
    except InvalidArgument:
        return None
    return name if identity == expected else None


class CallerPolicy:
    """The identity checks one server makes; ``tls_required`` is True outside the dev profile."""

    def __init__(self, *, tls_required: bool) -> None:
        self._tls_required = tls_required

    def caller(self, context: Any) -> str | None:
        """The caller's SPIFFE ID, None in the dev profile; UNAUTHENTICATED if mTLS lacks one."""
        identity = peer_identity(context)
        if identity is None and self._tls_required:
            raise Unauthenticated("this call needs a client certificate with a SPIFFE ID")
        return identity

    def authenticated(self, context: Any) -> None:
        """Any caller with an identity (reads); in the dev profile, any caller."""
        self.caller(context)

    def acting_as(self, context: Any, kind: str, name: str) -> None:
        """Refuse unless the caller is exactly ``kind/name``."""
        if self.caller(context) is not None:
            require_identity(context, spiffe_id(kind, name), tls_required=self._tls_required)

    def node(self, context: Any, node_id: str) -> None:
        """Refuse unless the caller is the node ``node_id`` the request names."""
        self.acting_as(context, "node", node_id)

    def allow(
        self, context: Any, rpc: str, *, services: Sequence[str] = (), admin: bool = False
    ) -> None:
        """Refuse unless the caller is ``service/<name>`` for one of ``services``, or an admin.

        ``admin`` admits any ``admin/<name>``; the refusal names ``rpc``, who may call
        it and who called.
        """
        actual = self.caller(context)
        if actual is None:
            return
        allowed = [spiffe_id("service", name) for name in services]
        if actual in allowed or (admin and admin_name(actual) is not None):
            return
        expected = " or ".join(allowed + ([ANY_ADMIN] if admin else []))
        raise PermissionDenied(f"{rpc} is for {expected}; the caller is {actual}")
