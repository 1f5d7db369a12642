"""The node's detection loop: score telemetry with the production model, report anomalies."""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass

from fedmesh.client.alerting import AlertingClient, AnomalyResult
from fedmesh.client.learner import Suspect, load_model, suspects
from fedmesh.client.local_data import LocalData
from fedmesh.client.registry import RegistryClient
from fedmesh.errors import FedmeshError, NotFound
from fedmesh.model import AnomalyDetector

log = logging.getLogger(__name__)

# DESIGN §4: below 0.5 a score raises no alert, so it is not reported either.
REPORT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Scan:
    """One scored snapshot: which model scored it and what it flagged."""

    model_version: int
    step: int
    reported: list[tuple[Suspect, AnomalyResult]]


class AnomalyWatch:
    """Scores the node's telemetry snapshots in turn with the model aliased ``production``."""

    def __init__(
        self,
        data: LocalData,
        registry: RegistryClient,
        alerting: AlertingClient,
        model_name: str,
        interval_s: float,
    ) -> None:
        self._data = data
        self._registry = registry
        self._alerting = alerting
        self._model_name = model_name
        self._interval_s = interval_s
        self._snapshots = itertools.cycle(data.held_out)
        self._model: tuple[int, AnomalyDetector] | None = None

    async def run(self) -> None:
        """Scan one snapshot every interval until cancelled."""
        while True:
            try:
                await self.scan()
            except FedmeshError as exc:
                log.warning("anomaly scan failed", extra={"fields": {"error": str(exc)}})
            await asyncio.sleep(self._interval_s)

    async def scan(self) -> Scan | None:
        """Score the next snapshot and report its anomalies; None while nothing is in production."""
        try:
            meta = await self._registry.get_version(self._model_name, alias="production")
        except NotFound:
            return None
        version = int(meta.ref.version)
        if self._model is None or self._model[0] != version:
            payload = await self._registry.download(self._model_name, version=version)
            self._model = (version, load_model(payload))
        graph = next(self._snapshots)
        flagged = await asyncio.to_thread(suspects, self._model[1], graph, REPORT_THRESHOLD)
        reported = []
        for suspect in flagged:
            result = await self._alerting.report_anomaly(
                f"mesh-{suspect.mesh_node}",
                suspect.score,
                suspect.telemetry,
                self._model_name,
                version,
                region=self._data.region,
            )
            reported.append((suspect, result))
        return Scan(version, int(graph.step), reported)
