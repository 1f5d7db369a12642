"""The leader's control loop: open rounds, push tasks, close rounds at quorum or deadline.

Everything it decides is read back from Redis on every tick, so a restarted or
newly elected leader continues exactly where the previous one stopped: a round
COLLECTING keeps its participants and stored deadline; a round AGGREGATING is
aggregated again, which the aggregator answers idempotently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from opentelemetry import trace

from fedmesh.errors import FailedPrecondition, FedmeshError
from fedmesh.services.coordinator.nodes import NodeRegistry
from fedmesh.services.coordinator.ports import AggregateOutcome, Aggregation, Events
from fedmesh.services.coordinator.runs import ModelRef, Run, RunStatus, RunStore
from fedmesh.services.coordinator.selection import select_participants
from fedmesh.services.coordinator.tasks import Task, TaskBoard, TaskKind
from fedmesh.store import Phase, RoundRecord, RoundStore
from fedmesh.telemetry import context_from_carrier, current_carrier

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)


def now_ms() -> int:
    """Wall-clock milliseconds (deadlines are stored as wall-clock times)."""
    return int(time.time() * 1000)


@dataclass(frozen=True)
class DriverSettings:
    """Timing of the control loop and of node liveness."""

    aggregator_address: str
    stale_after_ms: int
    tick_s: float = 0.2


class RoundDriver:
    """Drives every active run one step per tick while this replica leads."""

    def __init__(
        self,
        runs: RunStore,
        rounds: RoundStore,
        nodes: NodeRegistry,
        tasks: TaskBoard,
        aggregation: Aggregation,
        events: Events,
        settings: DriverSettings,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._runs = runs
        self._rounds = rounds
        self._nodes = nodes
        self._tasks = tasks
        self._aggregation = aggregation
        self._events = events
        self._settings = settings
        self._clock = clock
        self._in_flight: dict[tuple[str, int], asyncio.Task[None]] = {}

    async def tick(self, fencing_token: int) -> None:
        """Advance every active run by what its stored state allows now."""
        for run in await self._runs.active():
            try:
                await self._step(run, fencing_token)
            except FedmeshError as exc:
                log.warning(
                    "run step failed", extra={"fields": {"run": run.run_id, "error": str(exc)}}
                )

    async def cancel(self) -> None:
        """Stop aggregations in flight (on losing leadership or shutting down)."""
        for task in self._in_flight.values():
            task.cancel()
        for task in list(self._in_flight.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._in_flight.clear()

    async def _step(self, run: Run, token: int) -> None:
        if run.current_round == 0:
            await self._open_round(run, 1)
            return
        record = await self._rounds.get(run.run_id, run.current_round)
        if record.phase is Phase.PENDING:
            await self._start_collecting(run, record)
        elif record.phase is Phase.COLLECTING:
            await self._check_collection(run, record, token)
        elif record.phase is Phase.AGGREGATING:
            self._ensure_aggregating(run, record, token)
        elif run.current_round >= run.spec.rounds:
            await self._finish(run)
        else:
            await self._open_round(run, run.current_round + 1)

    async def _open_round(self, run: Run, round_no: int) -> None:
        now = self._clock()
        eligible = [
            n for n in await self._nodes.all() if n.eligible(now, self._settings.stale_after_ms)
        ]
        if len(eligible) < run.spec.min_participants:
            if not await self._rounds.exists(run.run_id, round_no):
                reason = (
                    f"quorum missed: {len(eligible)} eligible nodes, "
                    f"{run.spec.min_participants} required"
                )
                await self._fail_unopened(run, round_no, reason)
            return
        count = run.spec.selection_size(len(eligible))
        participants = select_participants(eligible, count, run.spec.seed, round_no)
        deadline = now + int(run.spec.collect_deadline_s * 1000)
        with _tracer.start_as_current_span(
            "round", attributes={"run": run.run_id, "round": round_no}
        ):
            carrier = current_carrier()
        await self._rounds.create(
            run.run_id,
            round_no,
            participants,
            deadline,
            now,
            {
                "base_model": run.model.to_json(),
                "kind": TaskKind.TRAIN.value,
                "trace_carrier": json.dumps(carrier),
            },
        )
        await self._runs.advance(run.run_id, round_no)
        await self._start_collecting(run, await self._rounds.get(run.run_id, round_no))

    async def _fail_unopened(self, run: Run, round_no: int, reason: str) -> None:
        now = self._clock()
        await self._rounds.create(
            run.run_id, round_no, [], now, now, {"base_model": run.model.to_json()}
        )
        await self._rounds.transition(
            run.run_id, round_no, Phase.PENDING, Phase.FAILED, _closed(now, reason)
        )
        await self._runs.advance(run.run_id, round_no)
        await self._runs.round_closed(run.run_id, completed=False, model=None)
        await self._round_failed_events(run, round_no, reason, quorum=True)

    async def _start_collecting(self, run: Run, record: RoundRecord) -> None:
        base = ModelRef.from_json(record.fields["base_model"])
        carrier = json.loads(record.fields.get("trace_carrier", "{}"))
        task_for = {
            node_id: Task(
                task_id=uuid.uuid4().hex,
                kind=TaskKind.TRAIN,
                run_id=run.run_id,
                round_no=record.round_no,
                model=base,
                aggregator_address=self._settings.aggregator_address,
                deadline_unix_ms=record.deadline_unix_ms,
                training=run.spec.training,
                privacy=run.spec.privacy,
                secure_aggregation=run.spec.secure_aggregation,
                trace_carrier=carrier,
            )
            for node_id in record.participants
        }
        await self._tasks.assign(sorted(record.participants), task_for)
        await self._rounds.transition(run.run_id, record.round_no, Phase.PENDING, Phase.COLLECTING)

    async def _check_collection(self, run: Run, record: RoundRecord, token: int) -> None:
        received = len(record.receipts)
        enough = min(run.spec.target_participants, len(record.participants))
        now = self._clock()
        if received >= enough or (
            now >= record.deadline_unix_ms and received >= run.spec.min_participants
        ):
            await self._rounds.transition(
                run.run_id, record.round_no, Phase.COLLECTING, Phase.AGGREGATING
            )
            await self._rounds.set_deadline(
                run.run_id, record.round_no, now + int(run.spec.aggregate_deadline_s * 1000)
            )
            self._ensure_aggregating(
                run, await self._rounds.get(run.run_id, record.round_no), token
            )
        elif now >= record.deadline_unix_ms:
            reason = (
                f"quorum missed: {received} of {len(record.participants)} selected nodes sent "
                f"an update before the deadline; {run.spec.min_participants} required"
            )
            await self._close_failed(run, record, Phase.COLLECTING, reason, quorum=True)

    def _ensure_aggregating(self, run: Run, record: RoundRecord, token: int) -> None:
        key = (run.run_id, record.round_no)
        if key in self._in_flight and not self._in_flight[key].done():
            return
        self._in_flight[key] = asyncio.create_task(self._aggregate(run, record, token))

    async def _aggregate(self, run: Run, record: RoundRecord, token: int) -> None:
        base = ModelRef.from_json(record.fields["base_model"])
        carrier: Mapping[str, str] = json.loads(record.fields.get("trace_carrier", "{}"))
        ctx = context_from_carrier(carrier)
        with _tracer.start_as_current_span("aggregate-round", context=ctx):
            try:
                outcome = await self._aggregation.aggregate_round(
                    run.run_id, record.round_no, token, run.spec, base, current_carrier()
                )
            except FailedPrecondition as exc:
                if "fencing token" in str(exc):
                    log.warning(
                        "deposed: aggregation refused", extra={"fields": {"error": str(exc)}}
                    )
                    return
                await self._close_failed(run, record, Phase.AGGREGATING, str(exc), quorum=False)
                return
            except FedmeshError as exc:
                if self._clock() >= (await self._rounds.get(*_key(record))).deadline_unix_ms:
                    await self._close_failed(
                        run, record, Phase.AGGREGATING, f"aggregation failed: {exc}", quorum=False
                    )
                return
        await self._close_completed(run, record, outcome)

    async def _close_completed(
        self, run: Run, record: RoundRecord, outcome: AggregateOutcome
    ) -> None:
        now = self._clock()
        excluded = [
            {"node_id": v.node_id, "reason": v.reason} for v in outcome.verdicts if v.excluded
        ]
        await self._rounds.transition(
            run.run_id,
            record.round_no,
            Phase.AGGREGATING,
            Phase.COMPLETED,
            {
                "result_model": outcome.model.to_json(),
                "excluded": json.dumps(excluded),
                "mean_local_loss": repr(outcome.mean_local_loss),
                "epsilon_spent": repr(outcome.epsilon_spent),
                "closed_unix_ms": str(now),
            },
        )
        await self._runs.round_closed(run.run_id, completed=True, model=outcome.model)
        await self._tasks.clear(record.participants, run.run_id, record.round_no)
        for verdict in outcome.verdicts:
            if verdict.excluded:
                await self._evidence(run, record.round_no, verdict.node_id, verdict.reason)

    async def _evidence(self, run: Run, round_no: int, node_id: str, reason: str) -> None:
        standing = await self._nodes.add_evidence(node_id)
        labels = {"run": run.run_id, "round": str(round_no), "node": node_id}
        await self._events.emit(
            "byzantine_suspected",
            labels,
            {"reason": reason, "trust": f"{standing.trust:.3f}"},
        )
        if standing.banned:
            await self._events.emit(
                "node_banned", {"node": node_id}, {"evidence": str(standing.evidence_count)}
            )

    async def _close_failed(
        self, run: Run, record: RoundRecord, expected: Phase, reason: str, *, quorum: bool
    ) -> None:
        await self._rounds.transition(
            run.run_id, record.round_no, expected, Phase.FAILED, _closed(self._clock(), reason)
        )
        await self._runs.round_closed(run.run_id, completed=False, model=None)
        await self._tasks.clear(record.participants, run.run_id, record.round_no)
        await self._round_failed_events(run, record.round_no, reason, quorum=quorum)

    async def _round_failed_events(
        self, run: Run, round_no: int, reason: str, *, quorum: bool
    ) -> None:
        labels = {"run": run.run_id, "round": str(round_no)}
        if quorum:
            await self._events.emit("quorum_missed", labels, {"reason": reason})
        await self._events.emit("round_failed", labels, {"reason": reason})

    async def _finish(self, run: Run) -> None:
        fresh = await self._runs.get(run.run_id)
        status = RunStatus.COMPLETED if fresh.rounds_completed > 0 else RunStatus.FAILED
        reason = "" if status is RunStatus.COMPLETED else "every round failed"
        await self._runs.finish(run.run_id, status, reason)
        await self._push_final_evaluation(fresh)
        await self._events.emit(
            "run_finished",
            {"run": run.run_id},
            {
                "status": status.value,
                "rounds_completed": str(fresh.rounds_completed),
                "rounds_failed": str(fresh.rounds_failed),
                "model_version": str(fresh.model.version),
            },
        )

    async def _push_final_evaluation(self, run: Run) -> None:
        now = self._clock()
        online = [
            n for n in await self._nodes.all() if n.eligible(now, self._settings.stale_after_ms)
        ]
        task_for = {
            n.node_id: Task(
                task_id=uuid.uuid4().hex,
                kind=TaskKind.EVALUATE,
                run_id=run.run_id,
                round_no=run.current_round,
                model=run.model,
                aggregator_address=self._settings.aggregator_address,
                deadline_unix_ms=now + int(run.spec.collect_deadline_s * 1000),
                training=run.spec.training,
                privacy=run.spec.privacy,
                secure_aggregation=run.spec.secure_aggregation,
            )
            for n in online
        }
        await self._tasks.assign(sorted(task_for), task_for)


def _closed(now: int, reason: str) -> dict[str, str]:
    return {"failure_reason": reason, "closed_unix_ms": str(now)}


def _key(record: RoundRecord) -> tuple[str, int]:
    return record.run_id, record.round_no
