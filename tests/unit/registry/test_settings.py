"""Registry settings from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmesh.errors import InvalidArgument
from fedmesh.services.registry.settings import RegistrySettings


def test_defaults_derive_from_the_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "FEDMESH_REGISTRY_BLOB_DIR",
        "FEDMESH_REGISTRY_SIGNING_KEY",
        "FEDMESH_REGISTRY_KEEP_VERSIONS",
        "FEDMESH_REGISTRY_PROMOTION_MARGIN",
        "FEDMESH_ALERTING_ADDRESS",
        "FEDMESH_REGISTRY_TEST_CRASH_AFTER_BLOB",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FEDMESH_REGISTRY_DATA_DIR", "/srv/registry")

    settings = RegistrySettings.from_env()

    assert settings.blob_dir == Path("/srv/registry/blobs")
    assert settings.signing_key == Path("/srv/registry/signing.key")
    assert (settings.keep_versions, settings.promotion_margin) == (10, 0.02)
    assert settings.alerting_address is None
    assert not settings.crash_after_blob


def test_values_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDMESH_REGISTRY_BLOB_DIR", "/data/blobs")
    monkeypatch.setenv("FEDMESH_REGISTRY_KEEP_VERSIONS", "3")
    monkeypatch.setenv("FEDMESH_REGISTRY_PROMOTION_MARGIN", "0.05")
    monkeypatch.setenv("FEDMESH_ALERTING_ADDRESS", "alerting:50054")

    settings = RegistrySettings.from_env()

    assert settings.blob_dir == Path("/data/blobs")
    assert (settings.keep_versions, settings.promotion_margin) == (3, 0.05)
    assert settings.alerting_address == "alerting:50054"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "FEDMESH_REGISTRY_KEEP_VERSIONS",
            "-1",
            "FEDMESH_REGISTRY_KEEP_VERSIONS=-1; expected 0 (keep every version) or more",
        ),
        (
            "FEDMESH_REGISTRY_KEEP_VERSIONS",
            "many",
            "FEDMESH_REGISTRY_KEEP_VERSIONS='many' is not an integer",
        ),
        (
            "FEDMESH_REGISTRY_PROMOTION_MARGIN",
            "2",
            "FEDMESH_REGISTRY_PROMOTION_MARGIN=2.0; expected within [0, 1]",
        ),
        (
            "FEDMESH_REGISTRY_MAX_MODEL_BYTES",
            "0",
            "FEDMESH_REGISTRY_MAX_MODEL_BYTES=0; expected > 0",
        ),
    ],
)
def test_bad_values_are_refused_with_their_name(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(InvalidArgument) as info:
        RegistrySettings.from_env()

    assert str(info.value) == message
