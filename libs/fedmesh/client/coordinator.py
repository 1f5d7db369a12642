"""Typed async client of the coordinator service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import grpc

from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.proto.coordinator.v1 import coordinator_pb2 as pb
from fedmesh.proto.coordinator.v1 import coordinator_pb2_grpc as pb_grpc


class CoordinatorClient:
    """Node and operator calls to the coordinator; every call has a deadline."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float = 10.0) -> None:
        self._stub = pb_grpc.CoordinatorServiceStub(channel)
        self._timeout_s = timeout_s

    async def register(
        self,
        node_id: str,
        samples: int,
        region: str,
        capabilities: Mapping[str, str],
        signing_public_key: bytes,
    ) -> pb.RegisterNodeResponse:
        """Register this node with its raw 32-byte Ed25519 public key (required by the server)."""
        request = pb.RegisterNodeRequest(
            node_id=node_id,
            samples=samples,
            region=region,
            capabilities=dict(capabilities),
            signing_public_key=signing_public_key,
        )
        response: pb.RegisterNodeResponse = await self._stub.RegisterNode(
            request, timeout=self._timeout_s
        )
        return response

    async def heartbeat(self, node_id: str) -> pb.HeartbeatResponse:
        """Send one heartbeat."""
        response: pb.HeartbeatResponse = await self._stub.Heartbeat(
            pb.HeartbeatRequest(node_id=node_id), timeout=self._timeout_s
        )
        return response

    async def tasks(self, node_id: str, stream_timeout_s: float) -> AsyncIterator[pb.Task]:
        """Tasks pushed to this node until the stream's deadline (then reconnect)."""
        call = self._stub.StreamTasks(
            pb.StreamTasksRequest(node_id=node_id), timeout=stream_timeout_s
        )
        async for response in call:
            yield response.task

    async def report_evaluation(
        self,
        node_id: str,
        run_id: str,
        round_no: int,
        model: common.ModelRef,
        metrics: common.EvaluationMetrics,
    ) -> None:
        """Report this node's evaluation of a model version."""
        await self._stub.ReportEvaluation(
            pb.ReportEvaluationRequest(
                node_id=node_id, run_id=run_id, round=round_no, model=model, metrics=metrics
            ),
            timeout=self._timeout_s,
        )

    async def start_run(self, spec: pb.RunSpec) -> pb.RunInfo:
        """Start a run."""
        response = await self._stub.StartRun(pb.StartRunRequest(spec=spec), timeout=self._timeout_s)
        run: pb.RunInfo = response.run
        return run

    async def stop_run(self, run_id: str, reason: str) -> pb.RunInfo:
        """Stop a run."""
        response = await self._stub.StopRun(
            pb.StopRunRequest(run_id=run_id, reason=reason), timeout=self._timeout_s
        )
        run: pb.RunInfo = response.run
        return run

    async def get_run(self, run_id: str) -> pb.GetRunResponse:
        """A run and its rounds."""
        response: pb.GetRunResponse = await self._stub.GetRun(
            pb.GetRunRequest(run_id=run_id), timeout=self._timeout_s
        )
        return response

    async def list_runs(self, page_size: int = 50) -> list[pb.RunInfo]:
        """The newest runs."""
        response = await self._stub.ListRuns(
            pb.ListRunsRequest(page_size=page_size), timeout=self._timeout_s
        )
        return list(response.runs)

    async def list_nodes(self) -> list[pb.NodeInfo]:
        """Every node with its state."""
        response = await self._stub.ListNodes(pb.ListNodesRequest(), timeout=self._timeout_s)
        return list(response.nodes)

    async def status(self) -> pb.GetStatusResponse:
        """Leadership, active runs and node counts."""
        response: pb.GetStatusResponse = await self._stub.GetStatus(
            pb.GetStatusRequest(), timeout=self._timeout_s
        )
        return response
