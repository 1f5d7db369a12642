"""The leader's control loop: open rounds, push tasks, close rounds at quorum or deadline.

Everything it decides is read back from Redis on every tick, so a restarted or
newly elected leader continues exactly where the previous one stopped, whatever
step the previous one died in:

- a round created but not yet recorded as the run's current round is adopted;
- a PENDING round gets its tasks again (task ids are derived from run, round and
  node, so a node that already has the task does not run it twice);
- a COLLECTING round keeps its participants and stored deadline;
- an AGGREGATING round is aggregated again, which the aggregator answers from
  its stored result, and the registry's PublishModel by (run, round) as well;
- a closed round is applied to the run (counters, model) exactly once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry import trace

from fedmesh.client.signing import SIGNING_KEYS_FIELD
from fedmesh.errors import Aborted, AlreadyExists, FailedPrecondition, FedmeshError
from fedmesh.services.coordinator.evidence import suspected
from fedmesh.services.coordinator.metrics import CoordinatorMetrics
from fedmesh.services.coordinator.nodes import Node, NodeRegistry
from fedmesh.services.coordinator.ports import AggregateOutcome, Aggregation, Events
from fedmesh.services.coordinator.privacy_budget import PrivacyBudgets, ledger
from fedmesh.services.coordinator.runs import ModelRef, Run, RunStatus, RunStore
from fedmesh.services.coordinator.selection import poisson_participants, select_participants
from fedmesh.services.coordinator.spec import RunSpec
from fedmesh.services.coordinator.tasks import Task, TaskBoard, TaskKind
from fedmesh.stopping import stop
from fedmesh.store import TERMINAL, Phase, RoundRecord, RoundStore
from fedmesh.telemetry import context_from_carrier, current_carrier

if TYPE_CHECKING:
    from fedmesh.privacy.accountant import BudgetDecision
    from fedmesh.privacy.secagg.round_spec import SecureRoundSpec

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

QUORUM = "quorum"
AGGREGATION = "aggregation"
SECURE_AGGREGATION = "secure_aggregation"


def now_ms() -> int:
    """Wall-clock milliseconds (deadlines are stored as wall-clock times)."""
    return int(time.time() * 1000)


def task_id(run_id: str, round_no: int, kind: TaskKind, node_id: str) -> str:
    """The id of a node's task in a round: the same whichever leader stores it."""
    return f"{run_id}/{round_no}/{kind.value.lower()}/{node_id}"


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
        metrics: CoordinatorMetrics,
        budgets: PrivacyBudgets,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        """``budgets`` records the rounds charged to private runs and raises the 80 % alert."""
        self._runs = runs
        self._rounds = rounds
        self._nodes = nodes
        self._tasks = tasks
        self._aggregation = aggregation
        self._events = events
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._budgets = budgets
        self._in_flight: dict[tuple[str, int], asyncio.Task[None]] = {}
        self.progressed = asyncio.Event()

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
        for task in list(self._in_flight.values()):
            await stop(task)
        self._in_flight.clear()

    async def _step(self, run: Run, token: int) -> None:
        following = run.current_round + 1
        if await self._rounds.exists(run.run_id, following):
            # The previous leader created the round and died before recording it.
            await self._runs.advance(run.run_id, following)
            return
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
        else:
            run = await self._settle(run, record)
            if run.current_round >= run.spec.rounds:
                await self._finish(run)
            else:
                await self._open_round(run, run.current_round + 1)

    async def _open_round(self, run: Run, round_no: int) -> None:
        if run.spec.privacy.enabled and not await self._charge_budget(run, round_no):
            return
        now = self._clock()
        eligible = [
            n for n in await self._nodes.all() if n.eligible(now, self._settings.stale_after_ms)
        ]
        fields = {"base_model": run.model.to_json(), "kind": TaskKind.TRAIN.value}
        if run.spec.secure_aggregation.enabled:
            fields.update(secure_round_fields(run.spec))
        participants, shortfall = _select(run.spec, eligible, round_no)
        fields[SIGNING_KEYS_FIELD] = signing_keys_field(eligible, participants)
        deadline = now
        if shortfall:
            fields["failure_reason"] = shortfall
            fields["failure_kind"] = QUORUM
        else:
            deadline = now + int(run.spec.collect_deadline_s * 1000)
            with _tracer.start_as_current_span(
                "round", attributes={"run": run.run_id, "round": round_no}
            ):
                fields["trace_carrier"] = json.dumps(current_carrier())
        try:
            await self._rounds.create(run.run_id, round_no, participants, deadline, now, fields)
        except AlreadyExists:
            return  # another leader opened it; the next tick adopts it
        self._metrics.round_opened()
        await self._runs.advance(run.run_id, round_no)
        await self._start_collecting(run, await self._rounds.get(run.run_id, round_no))

    async def _charge_budget(self, run: Run, round_no: int) -> bool:
        """Charge the round to the run's ε budget; False (and the run finished) if it overshoots.

        Decided from the round number alone, as the aggregator counts ε: round r
        costs the bound after r rounds, whatever became of the earlier ones.
        """
        decision = ledger(run.spec.privacy, round_no - 1).check_next_round()
        if not decision.fits:
            await self._stop_for_budget(run, decision)
            return False
        if not await self._budgets.charge(run.run_id, round_no):
            return True
        # Only the replica that charged the round raises the alert, so it is raised once.
        if decision.fraction_used < decision.alert_fraction <= decision.fraction_after:
            await self._events.emit(
                "privacy_budget_80",
                {"run": run.run_id},
                {**_budget_annotations(decision.epsilon_after, decision), "round": str(round_no)},
            )
        return True

    async def _stop_for_budget(self, run: Run, decision: BudgetDecision) -> None:
        if await self._finish(run, decision.reason):
            await self._events.emit(
                "privacy_budget_exhausted",
                {"run": run.run_id},
                {
                    **_budget_annotations(decision.epsilon_now, decision),
                    "refused_round": str(decision.rounds_done + 1),
                },
            )

    async def _start_collecting(self, run: Run, record: RoundRecord) -> None:
        if "failure_reason" in record.fields:
            await self._close_failed(
                run,
                record,
                Phase.PENDING,
                record.fields["failure_reason"],
                record.fields.get("failure_kind", QUORUM),
            )
            return
        base = ModelRef.from_json(record.fields["base_model"])
        carrier = json.loads(record.fields.get("trace_carrier", "{}"))
        # Nodes check their neighbours' SecAgg+ key advertisements with these keys.
        peer_keys: dict[str, str] = {}
        if run.spec.secure_aggregation.enabled:
            peer_keys = json.loads(record.fields.get(SIGNING_KEYS_FIELD, "{}"))
        task_for = {
            node_id: Task(
                task_id=task_id(run.run_id, record.round_no, TaskKind.TRAIN, node_id),
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
                peer_signing_keys=peer_keys,
            )
            for node_id in record.participants
        }
        await self._tasks.assign(sorted(record.participants), task_for)
        await self._rounds.transition(run.run_id, record.round_no, Phase.PENDING, Phase.COLLECTING)
        self._metrics.transitioned(Phase.COLLECTING)

    async def _check_collection(self, run: Run, record: RoundRecord, token: int) -> None:
        if run.spec.secure_aggregation.enabled:
            aborted = secure_abort_reason(record.fields)
            if aborted is not None:
                reason = f"secure aggregation aborted: {aborted}"
                await self._close_failed(run, record, Phase.COLLECTING, reason, SECURE_AGGREGATION)
                return
        received = len(record.receipts)
        enough = min(run.spec.target_participants, len(record.participants))
        now = self._clock()
        if received >= enough or (
            now >= record.deadline_unix_ms and received >= run.spec.min_participants
        ):
            deadline = now + int(run.spec.aggregate_deadline_s * 1000)
            # The aggregation deadline is written by the same atomic step as the phase,
            # so a successor never sees AGGREGATING under the collection deadline.
            await self._rounds.transition(
                run.run_id,
                record.round_no,
                Phase.COLLECTING,
                Phase.AGGREGATING,
                {"deadline_unix_ms": str(deadline), "collected_unix_ms": str(now)},
            )
            self._metrics.transitioned(Phase.AGGREGATING)
            await self._rounds.set_deadline(run.run_id, record.round_no, deadline)
            self._ensure_aggregating(
                run, await self._rounds.get(run.run_id, record.round_no), token
            )
        elif now >= record.deadline_unix_ms:
            reason = (
                f"quorum missed: {received} of {len(record.participants)} selected nodes sent "
                f"an update before the deadline; {run.spec.min_participants} required"
            )
            await self._close_failed(run, record, Phase.COLLECTING, reason, QUORUM)

    def _ensure_aggregating(self, run: Run, record: RoundRecord, token: int) -> None:
        key = (run.run_id, record.round_no)
        if key in self._in_flight and not self._in_flight[key].done():
            return
        task = asyncio.create_task(self._aggregate(run, record, token))
        task.add_done_callback(_log_failure)
        self._in_flight[key] = task

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
                await self._close_failed(run, record, Phase.AGGREGATING, str(exc), AGGREGATION)
                return
            except FedmeshError as exc:
                if self._clock() >= (await self._rounds.get(*_key(record))).deadline_unix_ms:
                    await self._close_failed(
                        run, record, Phase.AGGREGATING, f"aggregation failed: {exc}", AGGREGATION
                    )
                return
        try:
            await self._close_completed(run, record, outcome)
        except Aborted as exc:
            # StopRun failed the round while the aggregator published: the version stays in
            # the registry (its lineage names the round) but is not the run's model.
            log.warning(
                "round closed meanwhile; its published version is not the run's model",
                extra={
                    "fields": {
                        "run": run.run_id,
                        "round": record.round_no,
                        "model_version": outcome.model.version,
                        "error": str(exc),
                    }
                },
            )

    async def _close_completed(
        self, run: Run, record: RoundRecord, outcome: AggregateOutcome
    ) -> None:
        excluded = [
            {"node_id": v.node_id, "reason": v.reason} for v in outcome.verdicts if v.excluded
        ]
        # A bucketed rule judges bucket means: its verdict is shared by every member of the
        # bucket, honest ones included, so it is no evidence against any one node.
        judged = [] if run.spec.aggregation.bucket_size else suspected(outcome.verdicts)
        evidence = [{"node_id": v.node_id, "reason": v.reason} for v in judged]
        await self._rounds.transition(
            run.run_id,
            record.round_no,
            Phase.AGGREGATING,
            Phase.COMPLETED,
            {
                "result_model": outcome.model.to_json(),
                "excluded": json.dumps(excluded),
                "evidence": json.dumps(evidence),
                "mean_local_loss": repr(outcome.mean_local_loss),
                "epsilon_spent": repr(outcome.epsilon_spent),
                "closed_unix_ms": str(self._clock()),
            },
        )
        self._metrics.transitioned(Phase.COMPLETED)
        await self._settle(run, await self._rounds.get(*_key(record)))

    async def _close_failed(
        self, run: Run, record: RoundRecord, expected: Phase, reason: str, kind: str
    ) -> None:
        await self._rounds.transition(
            run.run_id,
            record.round_no,
            expected,
            Phase.FAILED,
            {"failure_reason": reason, "failure_kind": kind, "closed_unix_ms": str(self._clock())},
        )
        self._metrics.transitioned(Phase.FAILED)
        await self._settle(run, await self._rounds.get(*_key(record)))

    async def _settle(self, run: Run, record: RoundRecord) -> Run:
        """Apply a closed round to the run, its nodes and alerting; once, whoever does it."""
        if record.phase not in TERMINAL:
            raise FailedPrecondition(f"round {record.round_no} of {run.run_id} is not closed")
        completed = record.phase is Phase.COMPLETED
        fields = record.fields
        if completed:
            for entry in json.loads(fields.get("evidence", "[]")):
                await self._evidence(run, record.round_no, entry["node_id"], entry["reason"])
        model = ModelRef.from_json(fields["result_model"]) if completed else None
        if await self._runs.round_closed(run.run_id, record.round_no, completed, model):
            closed = int(fields.get("closed_unix_ms", "0")) or self._clock()
            self._metrics.round_closed(completed, (closed - record.opened_unix_ms) / 1000)
            await self._tasks.clear(record.participants, run.run_id, record.round_no)
            if not completed:
                reason = fields.get("failure_reason", "")
                labels = {"run": run.run_id, "round": str(record.round_no)}
                if fields.get("failure_kind") == QUORUM:
                    await self._events.emit("quorum_missed", labels, {"reason": reason})
                await self._events.emit("round_failed", labels, {"reason": reason})
        # The control loop takes its next step now rather than at its next tick.
        self.progressed.set()
        return await self._runs.get(run.run_id)

    async def _evidence(self, run: Run, round_no: int, node_id: str, reason: str) -> None:
        standing = await self._nodes.add_evidence(node_id, f"{run.run_id}/{round_no}")
        if not standing.counted:
            return
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

    async def _finish(self, run: Run, refused: str = "") -> bool:
        """Finish the run (FAILED with ``refused`` when a round was refused); False if it was."""
        if refused:
            status, reason = RunStatus.FAILED, refused
        elif run.rounds_completed > 0:
            status, reason = RunStatus.COMPLETED, ""
        else:
            status, reason = RunStatus.FAILED, "every round failed"
        # Evaluation tasks first: storing them again is harmless, finishing is not repeatable.
        await self._push_final_evaluation(run)
        if not await self._runs.finish(run.run_id, status, reason):
            return False
        await self._events.emit(
            "run_finished",
            {"run": run.run_id},
            {
                "status": status.value,
                "rounds_completed": str(run.rounds_completed),
                "rounds_failed": str(run.rounds_failed),
                "model_version": str(run.model.version),
            },
        )
        return True

    async def _push_final_evaluation(self, run: Run) -> None:
        now = self._clock()
        online = [
            n for n in await self._nodes.all() if n.eligible(now, self._settings.stale_after_ms)
        ]
        task_for = {
            n.node_id: Task(
                task_id=task_id(run.run_id, run.current_round, TaskKind.EVALUATE, n.node_id),
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


def signing_keys_field(nodes: list[Node], participants: list[str]) -> str:
    """The participants' registered public keys as the round record stores them."""
    chosen = set(participants)
    return json.dumps(
        {n.node_id: n.signing_public_key.hex() for n in nodes if n.node_id in chosen},
        sort_keys=True,
    )


def secure_round_spec(spec: RunSpec) -> SecureRoundSpec:
    """The SecAgg+ contract of a round of ``spec``: its settings, σ = z·C under DP, stage timeout.

    A stage waits a sixth of the collection deadline (at least 1 s) for stragglers.
    """
    from fedmesh.privacy.secagg.round_spec import DEFAULT_CLIP_RANGE, SecureRoundSpec

    secure, privacy = spec.secure_aggregation, spec.privacy
    return SecureRoundSpec(
        threshold=secure.threshold,
        neighbours=secure.neighbours,
        bucket_size=secure.bucket_size,
        min_survivors=secure.min_survivors,
        clip_range=secure.clip_range or DEFAULT_CLIP_RANGE,
        noise_stddev=privacy.noise_multiplier * privacy.clip_norm if privacy.enabled else 0.0,
        stage_timeout_s=max(1.0, spec.collect_deadline_s / 6),
    )


def secure_round_fields(spec: RunSpec) -> dict[str, str]:
    """The round-record fields that tell the aggregator how to run a secure round."""
    # Loaded only for secure runs: the SecAgg+ package pulls in torch.
    from fedmesh.privacy.secagg.round_spec import ROUND_FIELD

    return {ROUND_FIELD: secure_round_spec(spec).to_json()}


def secure_abort_reason(fields: Mapping[str, str]) -> str | None:
    """Why the aggregator aborted the round's SecAgg+ session, or None while it has not."""
    from fedmesh.privacy.secagg.round_spec import ABORT_FIELD

    return fields.get(ABORT_FIELD)


def _select(spec: RunSpec, eligible: list[Node], round_no: int) -> tuple[list[str], str]:
    """The round's participants, or none and why the quorum was missed.

    A private run with a sampling rate q > 0 draws each eligible node with
    probability q (what the accountant assumes); any other run picks by trust.
    """
    required = spec.min_participants
    if len(eligible) < required:
        return [], f"quorum missed: {len(eligible)} eligible nodes, {required} required"
    rate = spec.privacy.sampling_rate
    if spec.privacy.enabled and rate > 0:
        drawn = poisson_participants(eligible, rate, spec.seed, round_no)
        if len(drawn) < required:
            return [], (
                f"quorum missed: the Poisson draw at rate {rate:g} of {len(eligible)} eligible "
                f"nodes selected {len(drawn)}; {required} required"
            )
        return drawn, ""
    count = spec.selection_size(len(eligible))
    return select_participants(eligible, count, spec.seed, round_no), ""


def _budget_annotations(epsilon_spent: float, decision: BudgetDecision) -> dict[str, str]:
    return {
        "epsilon_spent": f"{epsilon_spent:.4g}",
        "epsilon_budget": f"{decision.epsilon_budget:g}",
        "delta": f"{decision.delta:g}",
        "reason": decision.reason,
    }


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning(
            "closing an aggregated round failed",
            extra={"fields": {"error": repr(task.exception())}},
        )


def _key(record: RoundRecord) -> tuple[str, int]:
    return record.run_id, record.round_no
