"""Evaluations, promotion behind the macro-F1 gate, and rollback of ``production``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from fedmesh.errors import FailedPrecondition, InvalidArgument
from fedmesh.services.registry.aliases import AliasAction, AliasBook, AliasMove
from fedmesh.services.registry.catalog import Catalog
from fedmesh.services.registry.metrics import RegistryMetrics
from fedmesh.services.registry.names import PRODUCTION, check_alias, check_version
from fedmesh.services.registry.records import Evaluation, StoredVersion
from fedmesh.services.registry.retention import Retention
from fedmesh.services.registry.versions import VersionStore

log = logging.getLogger(__name__)

# Float slack so that a macro-F1 exactly at the margin passes.
_SLACK = 1e-12
MAX_REASON_CHARS = 1024


@dataclass(frozen=True)
class PromotionGate:
    """Production takes only an evaluated version within ``margin`` macro-F1 of production's."""

    margin: float

    def check(self, candidate: StoredVersion, production: StoredVersion | None) -> None:
        """FailedPrecondition, with the numbers, unless ``candidate`` may become production."""
        record = candidate.record
        if candidate.evaluation is None:
            raise FailedPrecondition(
                f"version {record.version} of model {record.name!r} has no evaluation; record "
                "one (RecordEvaluation) before promoting it to production"
            )
        if production is None or production.evaluation is None:
            return
        ours = candidate.evaluation.macro_f1
        theirs = production.evaluation.macro_f1
        if theirs - ours > self.margin + _SLACK:
            raise FailedPrecondition(
                f"version {record.version} of model {record.name!r} has macro-F1 {ours:.4f}; "
                f"production (version {production.record.version}) has {theirs:.4f}; the gate "
                f"allows at most {self.margin:.4f} worse, i.e. at least {theirs - self.margin:.4f}"
            )


def _check_reason(reason: str) -> str:
    if len(reason) > MAX_REASON_CHARS:
        raise InvalidArgument(
            f"reason has {len(reason)} characters; expected at most {MAX_REASON_CHARS}"
        )
    return reason


class Promotions:
    """Moves aliases: evaluations in, gated promotions and rollbacks out."""

    def __init__(
        self,
        store: VersionStore,
        book: AliasBook,
        catalog: Catalog,
        retention: Retention,
        gate: PromotionGate,
        clock_ms: Callable[[], int],
        metrics: RegistryMetrics,
    ) -> None:
        self._store = store
        self._book = book
        self._catalog = catalog
        self._retention = retention
        self._gate = gate
        self._clock_ms = clock_ms
        self._metrics = metrics

    async def record_evaluation(
        self, name: str, version: int, evaluation: Evaluation
    ) -> StoredVersion:
        """Attach checked evaluation metrics to an existing version."""
        evaluation.check()
        if check_version(version) == 0:
            raise InvalidArgument("recording an evaluation names a version; got 0")
        await self._catalog.get(name, version)
        await self._store.set_evaluation(name, version, evaluation)
        return await self._catalog.get(name, version)

    async def promote(self, name: str, version: int, alias: str, reason: str = "") -> StoredVersion:
        """Point ``alias`` at ``version``; ``production`` must pass the gate."""
        check_alias(alias)
        _check_reason(reason)
        if check_version(version) == 0:
            raise InvalidArgument(f"promoting to {alias!r} names a version; got 0")
        target = await self._catalog.get(name, version)
        current = (await self._store.aliases(name)).get(alias, 0)
        if current == version:
            return target
        if alias == PRODUCTION:
            production = await self._catalog.get(name, current) if current else None
            self._gate.check(target, production)
        await self._move(
            name, AliasMove(alias, current, version, AliasAction.PROMOTE, self._clock_ms(), reason)
        )
        return await self._catalog.get(name, version)

    async def rollback(self, name: str, version: int = 0, reason: str = "") -> StoredVersion:
        """Move ``production`` back to an earlier version (0: the last earlier one it held)."""
        _check_reason(reason)
        check_version(version)
        await self._catalog.resolve(name)
        current = (await self._store.aliases(name)).get(PRODUCTION, 0)
        if not current:
            raise FailedPrecondition(f"model {name!r} has no production version to roll back")
        target = version or await self._previous_production(name, current)
        if target >= current:
            raise FailedPrecondition(
                f"rollback moves production back to an earlier version; production of model "
                f"{name!r} is version {current}, and {target} is not earlier (promote it instead)"
            )
        await self._catalog.get(name, target)
        await self._move(
            name,
            AliasMove(PRODUCTION, current, target, AliasAction.ROLLBACK, self._clock_ms(), reason),
        )
        return await self._catalog.get(name, target)

    async def _previous_production(self, name: str, current: int) -> int:
        for move in await self._book.moves(name, PRODUCTION):
            if 0 < move.from_version < current:
                return move.from_version
        raise FailedPrecondition(
            f"production of model {name!r} has held no version earlier than {current}; name "
            "the version to roll back to"
        )

    async def _move(self, name: str, move: AliasMove) -> None:
        await self._book.move(name, move)
        self._metrics.alias_moved(move.alias, move.action.value)
        log.info(
            "alias moved",
            extra={
                "fields": {
                    "model": name,
                    "alias": move.alias,
                    "from": move.from_version,
                    "to": move.to_version,
                    "action": move.action.value,
                }
            },
        )
        # The version the alias left may now fall outside retention.
        try:
            await self._retention.apply(name)
        except Exception:  # retention is housekeeping: a failure must not undo the move
            log.exception("retention after an alias move failed", extra={"fields": {"model": name}})
