"""Operator and node requests that change runs: start, stop, evaluation reports."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from fedmesh.aggregation.spec import min_participants
from fedmesh.errors import Aborted, FailedPrecondition, InvalidArgument
from fedmesh.services.coordinator.evaluations import EvaluationBoard, NodeEvaluation
from fedmesh.services.coordinator.nodes import NodeRegistry
from fedmesh.services.coordinator.ports import Evaluation, ModelCatalog
from fedmesh.services.coordinator.runs import ModelRef, Run, RunStatus, RunStore
from fedmesh.services.coordinator.spec import RunSpec, rule_spec, validate, with_defaults
from fedmesh.store import TERMINAL, Phase, RoundStore


class RunControl:
    """Starts and stops runs and takes evaluation reports."""

    def __init__(
        self,
        runs: RunStore,
        rounds: RoundStore,
        nodes: NodeRegistry,
        evaluations: EvaluationBoard,
        catalog: ModelCatalog,
        stale_after_ms: int,
        clock: Callable[[], int],
    ) -> None:
        self._runs = runs
        self._rounds = rounds
        self._nodes = nodes
        self._evaluations = evaluations
        self._catalog = catalog
        self._stale_after_ms = stale_after_ms
        self._clock = clock

    async def start(self, spec: RunSpec) -> Run:
        """Validate the spec, check the model and enough eligible nodes, store the run."""
        spec = validate(with_defaults(spec))
        check_feasible_privacy(spec)
        model = await self._catalog.latest(spec.model_name)
        if model is None:
            raise FailedPrecondition(
                f"model {spec.model_name!r} has no version in the registry; publish an "
                f"initial version first (fedmesh models init {spec.model_name})"
            )
        now = self._clock()
        eligible = sum(1 for n in await self._nodes.all() if n.eligible(now, self._stale_after_ms))
        if eligible < spec.min_participants:
            raise FailedPrecondition(
                f"{eligible} eligible nodes are online; the run needs at least "
                f"{spec.min_participants} (min_participants)"
            )
        return await self._runs.create(spec, model, now)

    async def stop(self, run_id: str, reason: str) -> Run:
        """Stop a running run; its open round fails with the reason."""
        run = await self._runs.get(run_id)
        if run.status is not RunStatus.RUNNING:
            raise FailedPrecondition(f"run {run_id} is already {run.status.value}")
        why = f"run stopped by operator: {reason or 'no reason given'}"
        if not await self._runs.finish(run_id, RunStatus.STOPPED, why):
            finished = await self._runs.get(run_id)
            raise FailedPrecondition(f"run {run_id} is already {finished.status.value}")
        if run.current_round and await self._rounds.exists(run_id, run.current_round):
            record = await self._rounds.get(run_id, run.current_round)
            if record.phase not in TERMINAL:
                # The leader may close the round in the meantime; then it stays as it closed.
                with contextlib.suppress(Aborted):
                    await self._rounds.transition(
                        run_id,
                        run.current_round,
                        [Phase.PENDING, Phase.COLLECTING, Phase.AGGREGATING],
                        Phase.FAILED,
                        {"failure_reason": why, "closed_unix_ms": str(self._clock())},
                    )
        return await self._runs.get(run_id)

    async def report_evaluation(
        self, node_id: str, run_id: str, model: ModelRef, evaluation: NodeEvaluation
    ) -> Evaluation:
        """Store a node's evaluation of a version of the run and record the combination."""
        await self._nodes.get(node_id)
        run = await self._runs.get(run_id)
        if model.name != run.spec.model_name:
            raise InvalidArgument(
                f"model {model.name!r} is not the model of run {run_id} ({run.spec.model_name!r})"
            )
        if model.version < 1 or model.version > run.model.version:
            raise InvalidArgument(
                f"model version {model.version} is not one run {run_id} has used "
                f"(latest is {run.model.version})"
            )
        combined = await self._evaluations.report(run_id, model.version, node_id, evaluation)
        await self._catalog.record_evaluation(model, combined)
        return combined


def check_feasible_privacy(spec: RunSpec) -> None:
    """Refuse a run the services cannot run privately as asked, with the numbers."""
    if spec.secure_aggregation.enabled:
        check_feasible_secure_aggregation(spec)
    privacy = spec.privacy
    if not privacy.enabled:
        return
    # Loaded only for private runs: the accountant pulls in dp-accounting and SciPy.
    from fedmesh.privacy.accountant import PrivacyLedger

    ledger = PrivacyLedger(
        privacy.epsilon_budget,
        privacy.delta,
        privacy.sampling_rate or 1.0,
        privacy.noise_multiplier,
    )
    affordable = ledger.affordable_rounds(spec.rounds)
    if affordable < spec.rounds:
        epsilon = ledger.accountant.epsilon_spent(spec.rounds)
        raise FailedPrecondition(
            f"privacy budget too small: {spec.rounds} rounds at sampling rate "
            f"{privacy.sampling_rate or 1.0} and noise multiplier {privacy.noise_multiplier} "
            f"spend ε = {epsilon:.3f} (δ = {privacy.delta}), over the budget "
            f"{privacy.epsilon_budget}; the budget affords {affordable} rounds"
        )


def check_feasible_secure_aggregation(spec: RunSpec) -> None:
    """Refuse secure buckets that a round closing at ``min_participants`` cannot fill or rule on.

    Buckets hold s or s + 1 of the n participants, ⌊n/s⌋ of them (one bucket of all
    participants when ``bucket_size`` is 0), and the rule runs over the bucket means,
    so it needs its quorum of buckets, not of nodes.
    """
    secure = spec.secure_aggregation
    n = spec.min_participants
    size = secure.bucket_size
    if size > n:
        raise FailedPrecondition(
            f"secure_aggregation.bucket_size {size} exceeds min_participants {n}: a round "
            f"that closes with {n} updates cannot fill one bucket; expected a bucket_size of "
            f"at most {n}"
        )
    if n < 2:
        raise FailedPrecondition(
            f"secure aggregation with min_participants {n}: the secure sum of one update is "
            "that update; expected min_participants of at least 2"
        )
    if size == 0 and secure.min_survivors > n:
        raise FailedPrecondition(
            f"secure_aggregation.min_survivors {secure.min_survivors} exceeds min_participants "
            f"{n}: a round that closes with {n} updates could never be unmasked; expected "
            f"at most {n}"
        )
    buckets = n // size if size else 1
    needed = min_participants(rule_spec(spec.aggregation))
    if needed <= buckets:
        return
    layout = f"secure buckets of {size}" if size else "one secure bucket (bucket_size 0)"
    largest = n // needed  # the largest bucket size that still gives enough buckets
    if largest >= 2:
        expected = f"a secure_aggregation.bucket_size of at most {largest}"
        if size:
            expected += f" or min_participants of at least {needed * size}"
    elif size:
        expected = f"min_participants of at least {needed * size}"
    else:
        expected = (
            f"a secure_aggregation.bucket_size s ≥ 2 and min_participants ≥ s·{needed} "
            f"(e.g. 2 and {2 * needed})"
        )
    raise FailedPrecondition(
        f"quorum infeasible with secure aggregation: {spec.aggregation.rule} with "
        f"f={spec.aggregation.byzantine_f} needs at least {needed} bucket means, but "
        f"min_participants {n} in {layout} gives {buckets}; expected {expected}"
    )
