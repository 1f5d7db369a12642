"""The coordinator's RPC edge: translate, authorize, validate, delegate."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from fedmesh.errors import InvalidArgument
from fedmesh.proto.coordinator.v1 import coordinator_pb2 as pb
from fedmesh.proto.coordinator.v1 import coordinator_pb2_grpc as pb_grpc
from fedmesh.rpc import translate_errors
from fedmesh.rpc.authorization import CallerPolicy
from fedmesh.services.coordinator import convert
from fedmesh.services.coordinator.control import RunControl
from fedmesh.services.coordinator.evaluations import EvaluationBoard, NodeEvaluation
from fedmesh.services.coordinator.leadership import Replica
from fedmesh.services.coordinator.nodes import NodeRegistry, NodeState
from fedmesh.services.coordinator.outage import unavailable_while_redis_down
from fedmesh.services.coordinator.privacy_budget import PrivacyBudgets
from fedmesh.services.coordinator.runs import ModelRef, RunStatus, RunStore
from fedmesh.services.coordinator.task_feed import TaskFeed
from fedmesh.store import RoundStore

Context = Any
LIST_PAGE_MAX = 200


class CoordinatorServicer(pb_grpc.CoordinatorServiceServicer):
    """Implements fedmesh.coordinator.v1.CoordinatorService."""

    def __init__(
        self,
        control: RunControl,
        runs: RunStore,
        rounds: RoundStore,
        nodes: NodeRegistry,
        feed: TaskFeed,
        evaluations: EvaluationBoard,
        replica: Replica,
        heartbeat_interval_s: float,
        stale_after_ms: int,
        clock: Callable[[], int],
        budgets: PrivacyBudgets,
        *,
        tls_required: bool = False,
    ) -> None:
        """``budgets`` is where a private run's ε spent is read.

        ``tls_required`` (outside the dev profile) makes every call present a SPIFFE ID;
        a caller that presents one is always checked (see docs/security.md).
        """
        self._control = control
        self._runs = runs
        self._rounds = rounds
        self._nodes = nodes
        self._feed = feed
        self._evaluations = evaluations
        self._replica = replica
        self._heartbeat_interval_s = heartbeat_interval_s
        self._stale_after_ms = stale_after_ms
        self._clock = clock
        self._budgets = budgets
        self._callers = CallerPolicy(tls_required=tls_required)

    @translate_errors
    @unavailable_while_redis_down
    async def RegisterNode(
        self, request: pb.RegisterNodeRequest, context: Context
    ) -> pb.RegisterNodeResponse:
        """Register or refresh a node."""
        self._callers.node(context, request.node_id)
        now = self._clock()
        node = await self._nodes.register(
            request.node_id,
            request.samples,
            request.region,
            dict(request.capabilities),
            now,
            request.signing_public_key,
        )
        return pb.RegisterNodeResponse(
            node=convert.node_to_proto(node, now, self._stale_after_ms),
            heartbeat_interval_s=self._heartbeat_interval_s,
        )

    @translate_errors
    @unavailable_while_redis_down
    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: Context
    ) -> pb.HeartbeatResponse:
        """Record a beat."""
        self._callers.node(context, request.node_id)
        now = self._clock()
        node = await self._nodes.heartbeat(request.node_id, now)
        return pb.HeartbeatResponse(
            state=convert.NODE_STATES[node.state(now, self._stale_after_ms)],
            heartbeat_interval_s=self._heartbeat_interval_s,
        )

    @translate_errors
    @unavailable_while_redis_down
    async def StreamTasks(
        self, request: pb.StreamTasksRequest, context: Context
    ) -> AsyncIterator[pb.StreamTasksResponse]:
        """Push the node's pending task now and whenever a new one appears."""
        self._callers.node(context, request.node_id)
        await self._nodes.get(request.node_id)
        async for task in self._feed.watch(request.node_id):
            yield pb.StreamTasksResponse(task=convert.task_to_proto(task))

    @translate_errors
    @unavailable_while_redis_down
    async def ReportEvaluation(
        self, request: pb.ReportEvaluationRequest, context: Context
    ) -> pb.ReportEvaluationResponse:
        """Take a node's evaluation of a model version."""
        self._callers.node(context, request.node_id)
        metrics = request.metrics
        await self._control.report_evaluation(
            request.node_id,
            request.run_id,
            convert.model_from_proto(request.model),
            NodeEvaluation(metrics.loss, metrics.macro_f1, metrics.pr_auc, metrics.samples),
        )
        return pb.ReportEvaluationResponse(accepted=True)

    @translate_errors
    @unavailable_while_redis_down
    async def StartRun(self, request: pb.StartRunRequest, context: Context) -> pb.StartRunResponse:
        """Validate and start a run."""
        self._callers.allow(context, "StartRun", admin=True)
        if not request.HasField("spec"):
            raise InvalidArgument("StartRun needs a spec")
        run = await self._control.start(convert.spec_from_proto(request.spec))
        return pb.StartRunResponse(run=convert.run_to_proto(run, None))

    @translate_errors
    @unavailable_while_redis_down
    async def StopRun(self, request: pb.StopRunRequest, context: Context) -> pb.StopRunResponse:
        """Stop a run."""
        self._callers.allow(context, "StopRun", admin=True)
        run = await self._control.stop(request.run_id, request.reason)
        return pb.StopRunResponse(run=await self._run_info(run.run_id))

    @translate_errors
    @unavailable_while_redis_down
    async def GetRun(self, request: pb.GetRunRequest, context: Context) -> pb.GetRunResponse:
        """A run with all its rounds."""
        self._callers.authenticated(context)
        run = await self._runs.get(request.run_id)
        rounds = []
        for round_no in range(1, run.current_round + 1):
            rounds.append(await self._round_info(run.run_id, round_no))
        return pb.GetRunResponse(run=await self._run_info(run.run_id), rounds=rounds)

    @translate_errors
    @unavailable_while_redis_down
    async def ListRuns(self, request: pb.ListRunsRequest, context: Context) -> pb.ListRunsResponse:
        """Runs, newest first, paged."""
        self._callers.authenticated(context)
        size = request.page_size or 50
        if not 1 <= size <= LIST_PAGE_MAX:
            raise InvalidArgument(f"page_size is {size}; expected 1–{LIST_PAGE_MAX}")
        try:
            offset = int(request.page_token or "0")
        except ValueError:
            raise InvalidArgument(f"page_token {request.page_token!r} is not valid") from None
        runs = await self._runs.newest(offset, size + 1)
        infos = [await self._run_info(run.run_id) for run in runs[:size]]
        token = str(offset + size) if len(runs) > size else ""
        return pb.ListRunsResponse(runs=infos, next_page_token=token)

    @translate_errors
    @unavailable_while_redis_down
    async def GetRound(self, request: pb.GetRoundRequest, context: Context) -> pb.GetRoundResponse:
        """One round with participants, receipts and exclusions."""
        self._callers.authenticated(context)
        await self._runs.get(request.run_id)
        return pb.GetRoundResponse(round=await self._round_info(request.run_id, request.round))

    @translate_errors
    @unavailable_while_redis_down
    async def ListNodes(
        self, request: pb.ListNodesRequest, context: Context
    ) -> pb.ListNodesResponse:
        """Nodes, optionally only those in one state."""
        self._callers.authenticated(context)
        now = self._clock()
        nodes = [
            convert.node_to_proto(n, now, self._stale_after_ms) for n in await self._nodes.all()
        ]
        if request.state:
            nodes = [n for n in nodes if n.state == request.state]
        return pb.ListNodesResponse(nodes=nodes)

    @translate_errors
    @unavailable_while_redis_down
    async def GetStatus(
        self, request: pb.GetStatusRequest, context: Context
    ) -> pb.GetStatusResponse:
        """Leadership, active runs and node counts, as they are now."""
        self._callers.authenticated(context)
        now = self._clock()
        states = [n.state(now, self._stale_after_ms) for n in await self._nodes.all()]
        leadership = self._replica.state.leadership
        token = await self._replica.current_fencing_token()
        active = [await self._run_info(run.run_id) for run in await self._runs.active()]
        return pb.GetStatusResponse(
            leader=leadership.leader,
            replica_id=self._replica.replica_id,
            fencing_token=token,
            active_runs=active,
            nodes_online=states.count(NodeState.ONLINE),
            nodes_stale=states.count(NodeState.STALE),
            nodes_banned=states.count(NodeState.BANNED),
            leader_id=leadership.holder,
        )

    async def _run_info(self, run_id: str) -> pb.RunInfo:
        run = await self._runs.get(run_id)
        phase = None
        if run.current_round and await self._rounds.exists(run_id, run.current_round):
            phase = (await self._rounds.get(run_id, run.current_round)).phase
        info: pb.RunInfo = convert.run_to_proto(run, phase)
        if run.status is RunStatus.RUNNING and phase is None:
            info.phase = pb.ROUND_PHASE_PENDING
        privacy = run.spec.privacy
        if privacy.enabled:
            info.epsilon_spent = (await self._budgets.state(run_id, privacy)).epsilon_spent
        return info

    async def _round_info(self, run_id: str, round_no: int) -> pb.RoundInfo:
        record = await self._rounds.get(run_id, round_no)
        evaluation = None
        if "result_model" in record.fields:
            version = ModelRef.from_json(record.fields["result_model"]).version
            evaluation = await self._evaluations.combined(run_id, version)
        info: pb.RoundInfo = convert.round_to_proto(record, evaluation)
        return info
