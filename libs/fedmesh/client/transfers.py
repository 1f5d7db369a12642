"""Moving models and updates: download from the registry, upload or mask deltas for aggregation."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from fedmesh.client.aggregator import AggregatorClient
from fedmesh.client.learner import LocalUpdate
from fedmesh.client.registry import RegistryClient
from fedmesh.client.secure_aggregation import SecureAggregationClient, SecureRoundRef
from fedmesh.client.secure_round import SecureRoundSession
from fedmesh.client.signing import NodeSigner
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.proto.coordinator.v1 import coordinator_pb2 as pb
from fedmesh.rpc import open_channel
from fedmesh.rpc.tls import TlsFiles


class ModelTransfers:
    """The node's registry client and one aggregator client per address it is sent to."""

    def __init__(
        self,
        registry: RegistryClient,
        tls: TlsFiles | None = None,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        self._registry = registry
        self._tls = tls
        self._interceptors = interceptors
        self._aggregators: dict[str, tuple[grpc.aio.Channel, AggregatorClient]] = {}

    async def download(self, model: common.ModelRef) -> bytes:
        """The model's canonical payload, digest verified."""
        payload = await self._registry.download(model.name, version=model.version)
        return payload

    async def upload(
        self, node_id: str, task: pb.Task, update: LocalUpdate, signer: NodeSigner
    ) -> str:
        """Stream the signed delta to the task's aggregator; returns its digest."""
        client = self._aggregator(task.aggregator_address)
        response = await client.submit_tensors(
            run_id=task.run_id,
            round_no=task.round,
            node_id=node_id,
            base_model=task.model,
            tensors=update.delta,
            num_samples=update.samples,
            local_loss=update.mean_loss,
            signer=signer,
        )
        return str(response.digest)

    async def open_secure_round(
        self, node_id: str, task: pb.Task, signer: NodeSigner
    ) -> SecureRoundSession:
        """Join the task's secure round at its aggregator and exchange keys (before training)."""
        self._aggregator(task.aggregator_address)
        channel = self._aggregators[task.aggregator_address][0]
        return await SecureRoundSession.open(
            SecureAggregationClient(channel),
            SecureRoundRef(task.run_id, task.round, node_id),
            task.deadline_unix_ms,
            signer,
            dict(task.peer_signing_keys),
        )

    def _aggregator(self, address: str) -> AggregatorClient:
        if address not in self._aggregators:
            channel = open_channel(
                address, tls=self._tls, default_timeout=300.0, interceptors=self._interceptors
            )
            self._aggregators[address] = (channel, AggregatorClient(channel))
        return self._aggregators[address][1]

    async def close(self) -> None:
        """Close the aggregator channels."""
        for channel, _ in self._aggregators.values():
            await channel.close()
        self._aggregators.clear()
