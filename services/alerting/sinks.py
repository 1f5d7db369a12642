"""What a sink is, how HTTP sinks post, and how their targets are shown without secrets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx

from fedmesh.services.alerting.notification import Notification

_RETRYABLE_STATUS = frozenset({408, 425, 429})
_BODY_CHARS = 200


class DeliveryError(Exception):
    """A sink did not take a notification; ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Sink(Protocol):
    """Somewhere notifications go: Alertmanager, a webhook, the log."""

    @property
    def name(self) -> str:
        """The receiver name routes use (``alertmanager``, ``webhook``, ``log``)."""
        ...

    @property
    def target(self) -> str:
        """Where it sends, safe to show (no credentials, no query)."""
        ...

    async def send(self, notification: Notification) -> None:
        """Deliver or raise :class:`DeliveryError`."""
        ...


def redact_url(url: str) -> str:
    """``url`` without user info and with the query and fragment elided."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    query = "…" if parts.query else ""
    return urlunsplit((parts.scheme, host, parts.path, query, ""))


def rfc3339(unix_ms: int) -> str:
    """``2024-05-01T12:00:00.123Z``: the time format of Alertmanager's API."""
    moment = datetime.fromtimestamp(unix_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def post_json(
    client: httpx.AsyncClient, url: str, payload: Any, headers: dict[str, str] | None = None
) -> None:
    """POST ``payload``; a 2xx answer is success, anything else a :class:`DeliveryError`.

    Connection failures, timeouts, 408/425/429 and 5xx are retryable; other 4xx
    mean the receiver refuses this payload and retrying cannot help. Error texts
    never carry the URL (it may hold a token).
    """
    try:
        response = await client.post(url, json=payload, headers=headers)
    except httpx.TimeoutException as exc:
        raise DeliveryError(f"timed out ({type(exc).__name__})", retryable=True) from None
    except httpx.TransportError as exc:
        raise DeliveryError(f"connection failed ({type(exc).__name__})", retryable=True) from None
    if response.is_success:
        return
    body = response.text[:_BODY_CHARS].strip()
    retryable = response.status_code >= 500 or response.status_code in _RETRYABLE_STATUS
    raise DeliveryError(f"HTTP {response.status_code}: {body}", retryable=retryable)
