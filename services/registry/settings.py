"""Settings of the registry service, from ``FEDMESH_REGISTRY_*`` environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fedmesh.config import CommonSettings, env_float, env_int, env_path
from fedmesh.errors import InvalidArgument


@dataclass(frozen=True)
class RegistrySettings:
    """Where blobs and the signing key live, retention, the promotion gate, limits, alerting."""

    common: CommonSettings
    data_dir: Path
    blob_dir: Path
    signing_key: Path
    keep_versions: int
    promotion_margin: float
    max_model_bytes: int
    alerting_address: str | None
    alert_timeout_s: float
    crash_after_blob: bool

    @classmethod
    def from_env(cls) -> RegistrySettings:
        """Read the settings; a malformed or out-of-range value is refused with its name.

        ``FEDMESH_REGISTRY_DATA_DIR`` (default ``.fedmesh/registry``) holds the blob
        dir, the signing key and, without ``FEDMESH_REDIS_URL``, an embedded Redis;
        ``FEDMESH_REGISTRY_BLOB_DIR`` and ``FEDMESH_REGISTRY_SIGNING_KEY`` move the
        first two. Alerts go out only when ``FEDMESH_ALERTING_ADDRESS`` is set.
        ``FEDMESH_REGISTRY_TEST_CRASH_AFTER_BLOB=1`` is for crash tests only: the
        process exits between the blob rename and the version record.
        """
        data_dir = env_path("FEDMESH_REGISTRY_DATA_DIR", Path(".fedmesh/registry"))
        settings = cls(
            common=CommonSettings.from_env(),
            data_dir=data_dir,
            blob_dir=env_path("FEDMESH_REGISTRY_BLOB_DIR", data_dir / "blobs"),
            signing_key=env_path("FEDMESH_REGISTRY_SIGNING_KEY", data_dir / "signing.key"),
            keep_versions=env_int("FEDMESH_REGISTRY_KEEP_VERSIONS", 10),
            promotion_margin=env_float("FEDMESH_REGISTRY_PROMOTION_MARGIN", 0.02),
            max_model_bytes=env_int("FEDMESH_REGISTRY_MAX_MODEL_BYTES", 16 << 30),
            alerting_address=os.environ.get("FEDMESH_ALERTING_ADDRESS") or None,
            alert_timeout_s=env_float("FEDMESH_REGISTRY_ALERT_TIMEOUT_S", 2.0),
            crash_after_blob=os.environ.get("FEDMESH_REGISTRY_TEST_CRASH_AFTER_BLOB") == "1",
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse values out of range."""
        if self.keep_versions < 0:
            raise InvalidArgument(
                f"FEDMESH_REGISTRY_KEEP_VERSIONS={self.keep_versions}; expected 0 (keep every "
                "version) or more"
            )
        if not 0.0 <= self.promotion_margin <= 1.0:
            raise InvalidArgument(
                f"FEDMESH_REGISTRY_PROMOTION_MARGIN={self.promotion_margin}; expected within [0, 1]"
            )
        if self.max_model_bytes <= 0:
            raise InvalidArgument(
                f"FEDMESH_REGISTRY_MAX_MODEL_BYTES={self.max_model_bytes}; expected > 0"
            )
        if self.alert_timeout_s <= 0:
            raise InvalidArgument(
                f"FEDMESH_REGISTRY_ALERT_TIMEOUT_S={self.alert_timeout_s}; expected > 0"
            )
