"""The one channel factory: deadlines on every call, retries for UNAVAILABLE only."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from fedmesh.rpc.limits import MAX_MESSAGE_BYTES
from fedmesh.rpc.tls import TlsFiles

DEFAULT_TIMEOUT_S = 30.0

_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


def _with_deadline(
    details: grpc.aio.ClientCallDetails, timeout: float
) -> grpc.aio.ClientCallDetails:
    if details.timeout is not None:
        return details
    return grpc.aio.ClientCallDetails(
        details.method, timeout, details.metadata, details.credentials, details.wait_for_ready
    )


class _UnaryUnaryDeadline(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, timeout: float) -> None:
        self._timeout = timeout

    async def intercept_unary_unary(
        self,
        continuation: Callable[..., Awaitable[Any]],
        details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        """Unary call with a deadline."""
        return await continuation(_with_deadline(details, self._timeout), request)


class _UnaryStreamDeadline(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, timeout: float) -> None:
        self._timeout = timeout

    async def intercept_unary_stream(
        self,
        continuation: Callable[..., Awaitable[Any]],
        details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        """Server-streaming call with a deadline."""
        return await continuation(_with_deadline(details, self._timeout), request)


class _StreamUnaryDeadline(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, timeout: float) -> None:
        self._timeout = timeout

    async def intercept_stream_unary(
        self,
        continuation: Callable[..., Awaitable[Any]],
        details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterable[Any] | Iterable[Any],
    ) -> Any:
        """Client-streaming call with a deadline."""
        return await continuation(_with_deadline(details, self._timeout), request_iterator)


class _StreamStreamDeadline(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, timeout: float) -> None:
        self._timeout = timeout

    async def intercept_stream_stream(
        self,
        continuation: Callable[..., Awaitable[Any]],
        details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterable[Any] | Iterable[Any],
    ) -> Any:
        """Bidirectional call with a deadline."""
        return await continuation(_with_deadline(details, self._timeout), request_iterator)


def default_deadlines(timeout: float) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors giving every call without a deadline ``timeout`` seconds.

    One object per kind of call: grpc's aio channel files an interceptor under the
    first kind it implements only, so one class implementing all four would cover
    unary calls alone.
    """
    return [
        _UnaryUnaryDeadline(timeout),
        _UnaryStreamDeadline(timeout),
        _StreamUnaryDeadline(timeout),
        _StreamStreamDeadline(timeout),
    ]


def open_channel(
    address: str,
    *,
    tls: TlsFiles | None = None,
    default_timeout: float = DEFAULT_TIMEOUT_S,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """An aio channel to ``address`` with tracing, default deadlines and the retry policy.

    ``interceptors`` run after the standard ones (tests use them to watch the wire).
    """
    options = [
        ("grpc.service_config", _SERVICE_CONFIG),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    chain = [*default_deadlines(default_timeout), *aio_client_interceptors(), *interceptors]
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=chain)
    return grpc.aio.secure_channel(
        address, tls.channel_credentials(), options=options, interceptors=chain
    )
