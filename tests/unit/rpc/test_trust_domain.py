"""The SPIFFE trust domain comes from FEDMESH_TRUST_DOMAIN, and IDs are built in it."""

import pytest

from fedmesh.rpc.authorization import admin_name
from fedmesh.rpc.certs import spiffe_id, trust_domain


def test_ids_use_the_configured_trust_domain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDMESH_TRUST_DOMAIN", raising=False)
    assert trust_domain() == "fedmesh.local"
    assert spiffe_id("node", "n1") == "spiffe://fedmesh.local/node/n1"

    monkeypatch.setenv("FEDMESH_TRUST_DOMAIN", "mesh.example.org")
    assert spiffe_id("service", "aggregator") == "spiffe://mesh.example.org/service/aggregator"
    assert admin_name("spiffe://mesh.example.org/admin/ops") == "ops"
    assert admin_name("spiffe://fedmesh.local/admin/ops") is None
    assert spiffe_id("node", "n1", "other.org") == "spiffe://other.org/node/n1"
