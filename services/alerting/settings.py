"""Settings of the alerting service (``FEDMESH_ALERTING_*``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fedmesh.config import CommonSettings, env_float, env_int, env_str
from fedmesh.errors import InvalidArgument
from fedmesh.services.alerting.courier import RetryPolicy


def _url(name: str) -> str | None:
    raw = os.environ.get(name) or None
    if raw is not None and not raw.startswith(("http://", "https://")):
        raise InvalidArgument(f"{name} must be an http:// or https:// URL")
    return raw


def _positive(name: str, default: float) -> float:
    value = env_float(name, default)
    if not value > 0:
        raise InvalidArgument(f"{name}={value} must be greater than 0")
    return value


@dataclass(frozen=True)
class AlertingSettings:
    """Rules, sinks and delivery policy; URLs and the token stay out of ``repr``."""

    common: CommonSettings
    rules_path: Path | None
    alertmanager_url: str | None = field(repr=False)
    webhook_url: str | None = field(repr=False)
    webhook_token: str | None = field(repr=False)
    external_url: str
    tick_s: float
    http_timeout_s: float
    retention_s: float
    retry: RetryPolicy

    @classmethod
    def from_env(cls) -> AlertingSettings:
        """Read the environment; a malformed value is refused with its variable's name."""
        rules = os.environ.get("FEDMESH_ALERTING_RULES")
        return cls(
            common=CommonSettings.from_env(),
            rules_path=Path(rules) if rules else None,
            alertmanager_url=_url("FEDMESH_ALERTING_ALERTMANAGER_URL"),
            webhook_url=_url("FEDMESH_ALERTING_WEBHOOK_URL"),
            webhook_token=os.environ.get("FEDMESH_ALERTING_WEBHOOK_TOKEN") or None,
            external_url=env_str("FEDMESH_ALERTING_EXTERNAL_URL", "fedmesh://alerting"),
            tick_s=_positive("FEDMESH_ALERTING_TICK_S", 1.0),
            http_timeout_s=_positive("FEDMESH_ALERTING_HTTP_TIMEOUT_S", 5.0),
            retention_s=_positive("FEDMESH_ALERTING_RETENTION_S", 86_400.0),
            retry=RetryPolicy(
                base_s=_positive("FEDMESH_ALERTING_RETRY_BASE_S", 1.0),
                max_s=_positive("FEDMESH_ALERTING_RETRY_MAX_S", 300.0),
                give_up_after_s=_positive("FEDMESH_ALERTING_GIVE_UP_AFTER_S", 86_400.0),
                unhealthy_after=max(1, env_int("FEDMESH_ALERTING_UNHEALTHY_AFTER", 5)),
            ),
        )
