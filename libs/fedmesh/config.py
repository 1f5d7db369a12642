"""Settings from ``FEDMESH_*`` environment variables; one settings object per service.

The same names are used by docker-compose and the Helm chart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fedmesh.errors import InvalidArgument
from fedmesh.rpc.tls import TlsFiles


def env_str(name: str, default: str) -> str:
    """A string setting."""
    return os.environ.get(name, default)


def env_int(name: str, default: int) -> int:
    """An integer setting; a malformed value is refused with its name."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgument(f"{name}={raw!r} is not an integer") from None


def env_float(name: str, default: float) -> float:
    """A float setting; a malformed value is refused with its name."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise InvalidArgument(f"{name}={raw!r} is not a number") from None


def env_path(name: str, default: Path) -> Path:
    """A filesystem path setting."""
    raw = os.environ.get(name)
    return Path(raw) if raw else default


@dataclass(frozen=True)
class CommonSettings:
    """What every service reads: where to listen, Redis, peers, TLS."""

    listen: str
    redis_url: str | None
    coordinator_address: str
    aggregator_address: str
    registry_address: str
    alerting_address: str
    tls: TlsFiles | None
    metrics_port: int

    @classmethod
    def from_env(cls) -> CommonSettings:
        """Read ``FEDMESH_LISTEN``, ``FEDMESH_REDIS_URL``, ``FEDMESH_*_ADDRESS``, TLS files."""
        cert, key, ca = (os.environ.get(f"FEDMESH_TLS_{part}") for part in ("CERT", "KEY", "CA"))
        tls = None
        if cert or key or ca:
            if not (cert and key and ca):
                raise InvalidArgument(
                    "FEDMESH_TLS_CERT, FEDMESH_TLS_KEY and FEDMESH_TLS_CA must be set together"
                )
            tls = TlsFiles(Path(cert), Path(key), Path(ca))
        return cls(
            listen=env_str("FEDMESH_LISTEN", "127.0.0.1:0"),
            redis_url=os.environ.get("FEDMESH_REDIS_URL") or None,
            coordinator_address=env_str("FEDMESH_COORDINATOR_ADDRESS", "127.0.0.1:50051"),
            aggregator_address=env_str("FEDMESH_AGGREGATOR_ADDRESS", "127.0.0.1:50052"),
            registry_address=env_str("FEDMESH_REGISTRY_ADDRESS", "127.0.0.1:50053"),
            alerting_address=env_str("FEDMESH_ALERTING_ADDRESS", "127.0.0.1:50054"),
            tls=tls,
            metrics_port=env_int("FEDMESH_METRICS_PORT", 0),
        )
