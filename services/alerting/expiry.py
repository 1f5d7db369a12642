"""Time-driven changes: auto-resolve after ``resolve_timeout``; forget old alerts and silences."""

from __future__ import annotations

from fedmesh.services.alerting.alert_store import AlertStore
from fedmesh.services.alerting.silences import SilenceStore

EXPIRE_BATCH = 500
PRUNE_EVERY_MS = 60_000
"""Pruning runs at most this often; the retention is hours, the sweep runs on every change."""


class Expiry:
    """Resolves alerts nobody re-fired in time and prunes what outlived the retention."""

    def __init__(self, alerts: AlertStore, silences: SilenceStore, retention_ms: int) -> None:
        self._alerts = alerts
        self._silences = silences
        self._retention_ms = retention_ms
        self._pruned_ms: int | None = None

    async def sweep(self, now_ms: int) -> int:
        """Resolve every alert whose resolve timeout passed; how many resolved."""
        resolved = 0
        while True:
            batch = await self._alerts.expire(now_ms, EXPIRE_BATCH)
            resolved += batch
            if batch < EXPIRE_BATCH:
                break
        if self._pruned_ms is None or now_ms - self._pruned_ms >= PRUNE_EVERY_MS:
            cutoff = now_ms - self._retention_ms
            await self._alerts.prune(cutoff)
            await self._silences.prune(cutoff)
            self._pruned_ms = now_ms
        return resolved
