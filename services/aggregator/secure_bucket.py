"""One bucket of a secure round: a `SecAggServer` whose stages close on arrivals or timeouts.

Each node's stage call records its message, then waits until the stage
closes, and receives what the server computed for it. A stage closes when
every node it expects has sent, or when its timer fires: `timeout_s` after the
stage's first message (stragglers are dropped), except the masked-input stage,
which waits for training until its own deadline. When the bucket falls below
its threshold every waiting call fails with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar

from fedmesh.client.signing import verify_advertisement
from fedmesh.errors import AlreadyExists, FailedPrecondition, InvalidArgument, Unauthenticated
from fedmesh.privacy.secagg import (
    ConflictingSecAggMessage,
    InvalidSecAggMessage,
    KeyAdvertisement,
    KeyShares,
    MaskedInput,
    NeighbourKeys,
    SecAggAbort,
    SecAggResult,
    SecAggServer,
    SecAggStageError,
    ShareDelivery,
    UnmaskingRequest,
    UnmaskingShares,
)

log = logging.getLogger(__name__)

Output = TypeVar("Output")


class Stage(Enum):
    """The four SecAgg+ stages, in order."""

    ADVERTISE_KEYS = "advertise keys"
    SHARE_KEYS = "share keys"
    MASKED_INPUT = "masked input"
    UNMASKING = "unmasking"


@dataclass
class _StageState(Generic[Output]):
    expected: frozenset[int]
    arrived: set[int]
    closed: asyncio.Event
    outputs: dict[int, Output]
    timer: asyncio.TimerHandle | None = None
    closing: bool = False


class SecureBucket:
    """Runs one bucket's SecAgg+ round for the nodes that call in; never holds a single input."""

    def __init__(
        self,
        bucket: int,
        server: SecAggServer,
        timeout_s: float,
        masked_input_deadline_s: float,
        on_settled: Callable[[SecureBucket], None],
    ) -> None:
        self.bucket = bucket
        self._server = server
        self._timeout_s = timeout_s
        self._masked_input_deadline_s = masked_input_deadline_s
        self._on_settled = on_settled
        self._result: SecAggResult | None = None
        self._abort_reason = ""
        self._closing: set[asyncio.Task[None]] = set()
        members = frozenset(server.config.participants)
        self._stages: dict[Stage, _StageState[Any]] = {
            stage: _StageState(frozenset(), set(), asyncio.Event(), {}) for stage in Stage
        }
        self._stages[Stage.ADVERTISE_KEYS].expected = members

    @property
    def vector_length(self) -> int:
        """How many uint32 words each masked input has."""
        return self._server.config.vector_length

    @property
    def result(self) -> SecAggResult | None:
        """The bucket's exact sum once unmasking finished, else None."""
        return self._result

    @property
    def abort_reason(self) -> str:
        """Why the bucket aborted; empty unless it did."""
        return self._abort_reason

    @property
    def settled(self) -> bool:
        """True once the bucket finished or aborted."""
        return self._result is not None or bool(self._abort_reason)

    @property
    def round_context(self) -> bytes:
        """What separates this bucket's keys and masks from every other bucket and round."""
        return self._server.config.round_context

    async def advertise_keys(self, message: KeyAdvertisement, signing_key: bytes) -> NeighbourKeys:
        """Stage 0: record the node's public keys; its neighbours' keys once the stage closes.

        The advertisement must carry the node's signature by ``signing_key`` (its
        registered key); one that does not is refused and nothing is recorded, so
        the neighbours never receive keys they would reject.
        """
        if not verify_advertisement(
            signing_key,
            message.signature,
            self.round_context,
            message.node,
            message.encryption_public_key,
            message.masking_public_key,
        ):
            raise Unauthenticated(
                f"bucket {self.bucket}: the key advertisement of node {message.node} is not "
                "signed by the Ed25519 key its node registered with the coordinator"
                + ("" if message.signature else " (signature is empty)")
            )
        result: NeighbourKeys = await self._call(
            Stage.ADVERTISE_KEYS, message.node, lambda: self._server.receive_advertisement(message)
        )
        return result

    async def share_keys(self, message: KeyShares) -> ShareDelivery:
        """Stage 1: record the node's sealed shares; the shares sealed for it once closed."""
        result: ShareDelivery = await self._call(
            Stage.SHARE_KEYS, message.sender, lambda: self._server.receive_key_shares(message)
        )
        return result

    async def masked_input(self, message: MaskedInput) -> UnmaskingRequest:
        """Stage 2: add the node's masked vector to the sum; the survivors once closed."""
        result: UnmaskingRequest = await self._call(
            Stage.MASKED_INPUT, message.node, lambda: self._server.receive_masked_input(message)
        )
        return result

    async def unmasking(self, message: UnmaskingShares) -> SecAggResult:
        """Stage 3: record the node's revealed shares; the bucket's result once unmasked."""
        result: SecAggResult = await self._call(
            Stage.UNMASKING, message.sender, lambda: self._server.receive_unmasking_shares(message)
        )
        return result

    def abort(self, reason: str) -> None:
        """End the bucket now (the round's time ran out); waiting calls fail with the reason."""
        if self.settled:
            return
        self._fail(reason)

    async def _call(self, stage: Stage, node: int, receive: Callable[[], None]) -> Any:
        state = self._stages[stage]
        if self._abort_reason:
            raise self._aborted()
        if state.closing:
            raise FailedPrecondition(
                f"bucket {self.bucket}: the {stage.value} stage closed before node {node}'s "
                "message arrived; the node is out of this round"
            )
        try:
            receive()
        except ConflictingSecAggMessage as error:
            raise AlreadyExists(f"bucket {self.bucket}: {error}") from error
        except InvalidSecAggMessage as error:
            raise InvalidArgument(f"bucket {self.bucket}: {error}") from error
        except SecAggStageError as error:
            raise FailedPrecondition(f"bucket {self.bucket}: {error}") from error
        state.arrived.add(node)
        if state.expected <= state.arrived:
            self._close(stage)
        elif state.timer is None and stage is not Stage.MASKED_INPUT:
            state.timer = asyncio.get_running_loop().call_later(self._timeout_s, self._close, stage)
        await state.closed.wait()
        if self._abort_reason:
            raise self._aborted()
        if node not in state.outputs:
            raise FailedPrecondition(
                f"bucket {self.bucket}: node {node} was dropped at the {stage.value} stage: "
                "too few of its neighbours took part in time"
            )
        return state.outputs[node]

    def start_masked_input_timer(self) -> None:
        """Arm the deadline of the masked-input stage (training time is allowed for)."""
        state = self._stages[Stage.MASKED_INPUT]
        if state.timer is None and not state.closed.is_set():
            state.timer = asyncio.get_running_loop().call_later(
                self._masked_input_deadline_s, self._close, Stage.MASKED_INPUT
            )

    def _close(self, stage: Stage) -> None:
        state = self._stages[stage]
        if state.closing or self._abort_reason:
            return
        state.closing = True
        if state.timer is not None:
            state.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._end_stage(stage))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _end_stage(self, stage: Stage) -> None:
        state = self._stages[stage]
        try:
            if stage is Stage.UNMASKING:
                # Reconstructing seeds and expanding masks is CPU work; keep the loop serving.
                outputs = await asyncio.to_thread(self._advance, stage)
            else:
                outputs = self._advance(stage)
        except SecAggAbort as error:
            self._fail(error.reason)
            return
        state.outputs = outputs
        state.closed.set()
        log.info(
            "secure aggregation stage closed",
            extra={
                "fields": {
                    "bucket": self.bucket,
                    "stage": stage.value,
                    "arrived": len(state.arrived),
                    "continuing": len(outputs),
                }
            },
        )
        following = list(Stage)[list(Stage).index(stage) + 1 :]
        if not following:
            self._on_settled(self)
            return
        self._stages[following[0]].expected = frozenset(outputs)
        if following[0] is Stage.MASKED_INPUT:
            self.start_masked_input_timer()

    def _advance(self, stage: Stage) -> dict[int, Any]:
        if stage is Stage.ADVERTISE_KEYS:
            return dict(self._server.close_advertisements())
        if stage is Stage.SHARE_KEYS:
            return dict(self._server.close_key_sharing())
        if stage is Stage.MASKED_INPUT:
            return dict(self._server.close_masked_inputs())
        result = self._server.finish()
        self._result = result
        return {node: result for node in result.contributors}

    def _fail(self, reason: str) -> None:
        self._abort_reason = reason
        for state in self._stages.values():
            if state.timer is not None:
                state.timer.cancel()
            state.closed.set()
        log.warning(
            "secure aggregation bucket aborted",
            extra={"fields": {"bucket": self.bucket, "reason": reason}},
        )
        self._on_settled(self)

    def _aborted(self) -> FailedPrecondition:
        return FailedPrecondition(
            f"secure aggregation of bucket {self.bucket} aborted: {self._abort_reason}"
        )
