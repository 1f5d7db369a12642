"""The secure rounds in progress on this aggregator: one `SecureBucket` per bucket.

A session starts when the first participant joins: the round's plan comes from
the `SecureRoundSpec` the coordinator wrote into the round record, the vector
length from the base model. When every bucket has finished or aborted, the
completed sums are stored durably and the contributors' receipts recorded in
one step, which is what the coordinator waits for. If no bucket completed, the
reasons are written into the round record and the coordinator fails the round.

The stage state (public keys, sealed shares, the running masked sums) lives in
memory only. An aggregator that restarts in the middle of a secure round cannot
continue it: the round is marked with the session that began it, and a
different process that finds the mark aborts the round with that reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from fedmesh.client.signing import SIGNING_KEYS_FIELD
from fedmesh.errors import FailedPrecondition, FedmeshError, NotFound
from fedmesh.privacy.secagg import SecAggServer
from fedmesh.privacy.secagg.round_spec import (
    ABORT_FIELD,
    ROUND_FIELD,
    SecureRoundPlan,
    SecureRoundSpec,
    plan_round,
)
from fedmesh.services.aggregator.base_model import BaseManifests
from fedmesh.services.aggregator.locks import KeyedLocks
from fedmesh.services.aggregator.metrics import AggregatorMetrics
from fedmesh.services.aggregator.secure_bucket import SecureBucket
from fedmesh.services.aggregator.secure_sums import SecureSumStore, UnmaskedBucket
from fedmesh.services.aggregator.update import ModelRef
from fedmesh.store import Phase, Receipt, RoundStore

log = logging.getLogger(__name__)

SESSION_FIELD = "secure_session"
"""The round-record field naming the aggregator session that runs the round's SecAgg+."""

_OPEN = frozenset({Phase.PENDING, Phase.COLLECTING})
_RESTARTED = (
    "the aggregator that ran this round's SecAgg+ stages restarted or was replaced; "
    "their state was in memory, so the round cannot continue"
)


@dataclass(frozen=True)
class InputFacts:
    """What a node declares beside its masked input: public metadata, not its update."""

    num_samples: int
    local_loss: float
    payload_bytes: int


@dataclass
class SecureRound:
    """One round's plan, its buckets, and the metadata of the masked inputs received."""

    run_id: str
    round_no: int
    plan: SecureRoundPlan
    signing_keys: dict[str, bytes]
    buckets: list[SecureBucket] = field(default_factory=list)
    facts: dict[str, InputFacts] = field(default_factory=dict)
    expiry: asyncio.TimerHandle | None = None
    started: float = field(default_factory=time.monotonic)

    def member(self, node_id: str) -> tuple[int, SecureBucket]:
        """The node's participant index and its bucket."""
        try:
            index = self.plan.index_of(node_id)
        except KeyError as error:
            raise FailedPrecondition(
                f"node {node_id!r} was not selected for round {self.round_no} of run {self.run_id}"
            ) from error
        return index, self.buckets[self.plan.bucket_of(index)]

    def signing_key(self, node_id: str) -> bytes:
        """The Ed25519 public key the coordinator recorded for a participant."""
        try:
            return self.signing_keys[node_id]
        except KeyError:
            raise FailedPrecondition(
                f"round {self.round_no} of run {self.run_id} has no signing key recorded for "
                f"node {node_id!r}"
            ) from None


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class SecureRounds:
    """Creates, finds and settles the secure rounds of this aggregator process."""

    def __init__(
        self,
        rounds: RoundStore,
        manifests: BaseManifests,
        sums: SecureSumStore,
        metrics: AggregatorMetrics,
        clock_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        self._rounds = rounds
        self._manifests = manifests
        self._sums = sums
        self._metrics = metrics
        self._clock_ms = clock_ms
        self._session = uuid.uuid4().hex
        self._active: dict[tuple[str, int], SecureRound] = {}
        self._locks = KeyedLocks()
        self._settling: set[asyncio.Task[None]] = set()

    async def join(self, run_id: str, round_no: int, node_id: str) -> tuple[SecureRound, int]:
        """The node's round and participant index, starting the session on the first join."""
        key = (run_id, round_no)
        async with self._locks.hold(key):
            if key not in self._active:
                self._active[key] = await self._start(run_id, round_no)
        secure_round = self._active[key]
        index, _ = secure_round.member(node_id)
        return secure_round, index

    async def find(self, run_id: str, round_no: int, node_id: str) -> tuple[int, SecureBucket]:
        """The node's index and bucket in a running session; FailedPrecondition if none runs.

        A round whose session another aggregator process began (this one restarted, or
        replaced it) is aborted here with that reason, so the coordinator fails it at
        once instead of waiting for its deadline.
        """
        if (run_id, round_no) not in self._active:
            owner = await self._session_of(run_id, round_no)
            if owner is not None and owner != self._session:
                await self._record_abort(run_id, round_no, _RESTARTED)
                raise FailedPrecondition(f"round {round_no} of run {run_id}: {_RESTARTED}")
        return self._running(run_id, round_no).member(node_id)

    async def _session_of(self, run_id: str, round_no: int) -> str | None:
        try:
            record = await self._rounds.get(run_id, round_no)
        except NotFound:
            return None
        return record.fields.get(SESSION_FIELD)

    def signing_key(self, run_id: str, round_no: int, node_id: str) -> bytes:
        """The registered key of a node of a running session (to check what it signs)."""
        return self._running(run_id, round_no).signing_key(node_id)

    def _running(self, run_id: str, round_no: int) -> SecureRound:
        secure_round = self._active.get((run_id, round_no))
        if secure_round is None:
            raise FailedPrecondition(
                f"no secure aggregation session runs for round {round_no} of run {run_id} on "
                "this aggregator: join the round first (JoinSecureRound); a session lost in a "
                "restart cannot continue"
            )
        return secure_round

    def note_input(self, run_id: str, round_no: int, node_id: str, facts: InputFacts) -> None:
        """Keep a node's declared sample count and loss for its receipt."""
        secure_round = self._active.get((run_id, round_no))
        if secure_round is not None:
            secure_round.facts[node_id] = facts

    async def _start(self, run_id: str, round_no: int) -> SecureRound:
        record = await self._rounds.get(run_id, round_no)
        if record.phase not in _OPEN:
            raise FailedPrecondition(
                f"round {round_no} of run {run_id} is {record.phase.value}; secure "
                "aggregation runs only while it collects"
            )
        raw_spec = record.fields.get(ROUND_FIELD)
        if raw_spec is None:
            raise FailedPrecondition(
                f"round {round_no} of run {run_id} does not use secure aggregation; "
                "submit the update with SubmitUpdate"
            )
        if ABORT_FIELD in record.fields:
            raise FailedPrecondition(
                f"the secure aggregation of round {round_no} of run {run_id} aborted: "
                f"{record.fields[ABORT_FIELD]}"
            )
        if await asyncio.to_thread(self._sums.load, run_id, round_no) is not None:
            raise FailedPrecondition(
                f"the secure aggregation of round {round_no} of run {run_id} already finished"
            )
        owner = await self._rounds.note_once(run_id, round_no, SESSION_FIELD, self._session)
        if owner != self._session:
            await self._record_abort(run_id, round_no, _RESTARTED)
            raise FailedPrecondition(f"round {round_no} of run {run_id}: {_RESTARTED}")
        signing_keys = _signing_keys(record.fields.get(SIGNING_KEYS_FIELD))
        if signing_keys is None:
            reason = (
                f"the round record has no valid {SIGNING_KEYS_FIELD} field, so key advertisements "
                "cannot be verified"
            )
            await self._record_abort(run_id, round_no, reason)
            raise FailedPrecondition(f"round {round_no} of run {run_id}: {reason}")
        base = ModelRef.from_round_field(record.fields.get("base_model"), run_id, round_no)
        manifest = await self._manifests.manifest(base)
        try:
            plan = plan_round(
                SecureRoundSpec.from_json(raw_spec),
                sorted(record.participants),
                manifest.numel,
                run_id,
                round_no,
                record.opened_unix_ms,
            )
        except ValueError as error:
            reason = f"the secure aggregation settings do not fit this round: {error}"
            await self._record_abort(run_id, round_no, reason)
            raise FailedPrecondition(f"round {round_no} of run {run_id}: {reason}") from error
        secure_round = SecureRound(run_id, round_no, plan, signing_keys)
        remaining_s = max(0.0, (record.deadline_unix_ms - self._clock_ms()) / 1000)
        timeout_s = plan.spec.stage_timeout_s
        for bucket, config in enumerate(plan.configs):
            secure_round.buckets.append(
                SecureBucket(
                    bucket,
                    SecAggServer(config),
                    timeout_s,
                    masked_input_deadline_s=max(0.0, remaining_s - timeout_s),
                    on_settled=lambda _: self._check_settled(secure_round),
                )
            )
        # Past the collection deadline nothing can complete: end what still waits.
        secure_round.expiry = asyncio.get_running_loop().call_later(
            remaining_s, self._expire, secure_round
        )
        log.info(
            "secure aggregation session started",
            extra={
                "fields": {
                    "run_id": run_id,
                    "round": round_no,
                    "participants": len(plan.participants),
                    "buckets": len(plan.configs),
                    "vector_length": manifest.numel,
                }
            },
        )
        return secure_round

    def _expire(self, secure_round: SecureRound) -> None:
        for bucket in secure_round.buckets:
            bucket.abort("the round's collection deadline passed before the bucket finished")

    def _check_settled(self, secure_round: SecureRound) -> None:
        if not all(bucket.settled for bucket in secure_round.buckets):
            return
        if secure_round.expiry is not None:
            secure_round.expiry.cancel()
        task = asyncio.get_running_loop().create_task(self._settle(secure_round))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, secure_round: SecureRound) -> None:
        run_id, round_no, plan = secure_round.run_id, secure_round.round_no, secure_round.plan
        try:
            completed = [
                UnmaskedBucket(
                    bucket=bucket.bucket,
                    total=bucket.result.total,
                    contributors=tuple(plan.participants[i] for i in bucket.result.contributors),
                    dropped=tuple(plan.participants[i] for i in bucket.result.dropped),
                )
                for bucket in secure_round.buckets
                if bucket.result is not None
            ]
            aborted = {b.bucket: b.abort_reason for b in secure_round.buckets if b.abort_reason}
            self._metrics.secure_round_settled(
                len(completed), len(aborted), time.monotonic() - secure_round.started
            )
            if not completed:
                reasons = "; ".join(f"bucket {b}: {r}" for b, r in sorted(aborted.items()))
                await self._record_abort(run_id, round_no, reasons)
                return
            sums = await asyncio.to_thread(
                self._sums.store,
                run_id,
                round_no,
                plan.codec,
                plan.configs[0].vector_length,
                completed,
                aborted,
            )
            receipts = [
                self._receipt(secure_round, node_id, bucket.digest)
                for bucket in sums.buckets
                for node_id in bucket.contributors
            ]
            try:
                await self._rounds.record_receipts(run_id, round_no, receipts)
            except FedmeshError:
                # The round closed meanwhile (its deadline passed): the sums serve nothing.
                await asyncio.to_thread(self._sums.remove, run_id, round_no)
                raise
            log.info(
                "secure aggregation finished",
                extra={
                    "fields": {
                        "run_id": run_id,
                        "round": round_no,
                        "buckets_completed": len(sums.buckets),
                        "buckets_aborted": len(aborted),
                        "contributors": len(receipts),
                    }
                },
            )
        except FedmeshError as error:
            log.warning(
                "secure aggregation result not recorded",
                extra={"fields": {"run_id": run_id, "round": round_no, "error": str(error)}},
            )
        finally:
            self._active.pop((run_id, round_no), None)

    def _receipt(self, secure_round: SecureRound, node_id: str, digest: str) -> Receipt:
        facts = secure_round.facts.get(node_id, InputFacts(1, 0.0, 0))
        return Receipt(
            node_id=node_id,
            digest=digest,
            num_samples=max(1, facts.num_samples),
            payload_bytes=facts.payload_bytes,
            local_loss=facts.local_loss,
            received_unix_ms=self._clock_ms(),
        )

    async def _record_abort(self, run_id: str, round_no: int, reason: str) -> None:
        log.warning(
            "secure aggregation round aborted",
            extra={"fields": {"run_id": run_id, "round": round_no, "reason": reason}},
        )
        # If the round closed meanwhile, nothing is waiting for the reason.
        with contextlib.suppress(FailedPrecondition, NotFound):
            await self._rounds.note_once(run_id, round_no, ABORT_FIELD, reason)


def _signing_keys(raw: str | None) -> dict[str, bytes] | None:
    """The participants' keys from the round field (JSON node → hex), None if absent or bad."""
    try:
        parsed = json.loads(raw or "null")
        return {str(node): bytes.fromhex(key) for node, key in parsed.items()}
    except (AttributeError, TypeError, ValueError):
        return None
