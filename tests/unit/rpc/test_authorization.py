"""CallerPolicy: nothing to check without mTLS; with an identity, exact matches only."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fedmesh.errors import PermissionDenied, Unauthenticated
from fedmesh.rpc.authorization import CallerPolicy, admin_name


class Peer:
    """The part of a gRPC servicer context that identity checks read."""

    def __init__(self, identity: str | None) -> None:
        self._identity = identity

    def auth_context(self) -> dict[str, list[bytes]]:
        """What gRPC reports for a verified client certificate (nothing without one)."""
        if self._identity is None:
            return {}
        return {"x509_subject_alternative_name": [b"localhost", self._identity.encode()]}


ALICE = "spiffe://fedmesh.local/admin/alice"
N1 = "spiffe://fedmesh.local/node/n1"
COORDINATOR = "spiffe://fedmesh.local/service/coordinator"
Check = Callable[[CallerPolicy, Peer], None]


def test_the_dev_profile_checks_nothing() -> None:
    policy, anyone = CallerPolicy(tls_required=False), Peer(None)

    policy.node(anyone, "n1")
    policy.allow(anyone, "StartRun", admin=True)
    policy.allow(anyone, "AggregateRound", services=("coordinator",))
    policy.authenticated(anyone)

    assert policy.caller(anyone) is None


@pytest.mark.parametrize(
    "check",
    [
        lambda p, c: p.node(c, "n1"),
        lambda p, c: p.allow(c, "StartRun", admin=True),
        lambda p, c: p.allow(c, "PublishModel", services=("aggregator",), admin=True),
        lambda p, c: p.authenticated(c),
    ],
    ids=["node", "admin", "service-or-admin", "authenticated"],
)
def test_with_mtls_every_check_needs_a_spiffe_id(check: Check) -> None:
    policy = CallerPolicy(tls_required=True)

    with pytest.raises(Unauthenticated) as info:
        check(policy, Peer(None))

    assert str(info.value) == "this call needs a client certificate with a SPIFFE ID"


@pytest.mark.parametrize("tls_required", [True, False])
def test_an_identity_present_is_always_checked_exactly(tls_required: bool) -> None:
    policy = CallerPolicy(tls_required=tls_required)

    policy.node(Peer(N1), "n1")
    policy.allow(Peer(COORDINATOR), "AggregateRound", services=("coordinator",))
    policy.allow(Peer(ALICE), "StartRun", admin=True)
    policy.authenticated(Peer(N1))
    with pytest.raises(PermissionDenied) as as_prefix:
        policy.node(Peer(N1), "n10")
    with pytest.raises(PermissionDenied) as longer_service:
        policy.allow(Peer(COORDINATOR + "-2"), "AggregateRound", services=("coordinator",))
    with pytest.raises(PermissionDenied) as not_admin:
        policy.allow(Peer(N1), "StopRun", admin=True)
    with pytest.raises(PermissionDenied) as neither:
        policy.allow(Peer(ALICE), "RecordEvaluation", services=("coordinator",))

    assert str(as_prefix.value) == f"caller {N1} may not act as spiffe://fedmesh.local/node/n10"
    assert str(longer_service.value) == (
        f"AggregateRound is for {COORDINATOR}; the caller is {COORDINATOR}-2"
    )
    assert str(not_admin.value) == (
        f"StopRun is for an admin (spiffe://fedmesh.local/admin/<name>); the caller is {N1}"
    )
    assert str(neither.value) == f"RecordEvaluation is for {COORDINATOR}; the caller is {ALICE}"


@pytest.mark.parametrize(
    ("identity", "name"),
    [
        (ALICE, "alice"),
        ("spiffe://fedmesh.local/admin/", None),
        ("spiffe://fedmesh.local/admin/a/b", None),
        ("spiffe://fedmesh.local/admins/alice", None),
        ("spiffe://other.domain/admin/alice", None),
        ("spiffe://fedmesh.local/node/admin", None),
        ("spiffe://fedmesh.local/service/admin/alice", None),
    ],
)
def test_an_admin_is_exactly_admin_slash_name(identity: str, name: str | None) -> None:
    assert admin_name(identity) == name
