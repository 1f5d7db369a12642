"""Raises a critical ``model_tampered`` event on the alerting service when tampering is found.

The alert is best effort with a short deadline: verification reports DATA_LOSS to its
caller whether or not alerting answers.
"""

from __future__ import annotations

import logging
import time

import grpc

from fedmesh.proto.alerting.v1 import alerting_pb2, alerting_pb2_grpc
from fedmesh.rpc import TlsFiles, open_channel
from fedmesh.services.registry.chain import Tampering

log = logging.getLogger(__name__)

EVENT_KIND = "model_tampered"


class AlertingAlarm:
    """Emits one alerting event per tampering found."""

    def __init__(self, address: str, *, tls: TlsFiles | None, timeout_s: float) -> None:
        self._address = address
        self._tls = tls
        self._timeout_s = timeout_s

    async def raise_alarm(self, tampering: Tampering) -> None:
        """Send the event; log and carry on when alerting is down or slow."""
        event = alerting_pb2.Event(
            kind=EVENT_KIND,
            source="registry",
            labels={"model": tampering.name, "version": str(tampering.version)},
            annotations={"summary": str(tampering)},
            severity=alerting_pb2.SEVERITY_CRITICAL,
            time_unix_ms=int(time.time() * 1000),
        )
        try:
            async with open_channel(
                self._address, tls=self._tls, default_timeout=self._timeout_s
            ) as channel:
                await alerting_pb2_grpc.AlertingServiceStub(channel).Emit(
                    alerting_pb2.EmitRequest(event=event), timeout=self._timeout_s
                )
        except Exception as exc:  # the alert is best effort: verification answers regardless
            if isinstance(exc, grpc.aio.AioRpcError):
                status = exc.code().name
            else:
                status = type(exc).__name__
            log.warning(
                "could not raise the tampering alert",
                extra={
                    "fields": {
                        "model": tampering.name,
                        "version": tampering.version,
                        "status": status,
                    }
                },
            )
