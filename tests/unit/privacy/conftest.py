"""Drives a whole SecAgg+ round in one process: real clients, real server, chosen dropouts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pytest
from numpy.typing import NDArray

from fedmesh.privacy.secagg import (
    ClientStage,
    MaskedInput,
    SecAggClient,
    SecAggConfig,
    SecAggResult,
    SecAggServer,
)


@dataclass
class RoundRecord:
    """What a driven round sent, and a hook run on the server after every step."""

    masked_inputs: dict[int, MaskedInput] = field(default_factory=dict)
    observe: Callable[[SecAggServer], None] = lambda server: None


def drive_round(
    config: SecAggConfig,
    updates: Mapping[int, NDArray[np.uint32]],
    drop_before: Mapping[int, ClientStage] | None = None,
    record: RoundRecord | None = None,
) -> SecAggResult:
    """Run all four stages; a node listed in `drop_before` sends nothing from that stage on."""
    drops = dict(drop_before or {})
    order = list(ClientStage)

    def active(node: int, stage: ClientStage) -> bool:
        return node not in drops or order.index(stage) < order.index(drops[node])

    log = record if record is not None else RoundRecord()
    server = SecAggServer(config)
    clients = {node: SecAggClient(config, node) for node in config.participants}
    for node, client in clients.items():
        if active(node, ClientStage.ADVERTISE_KEYS):
            server.receive_advertisement(client.advertise_keys())
    for node, neighbour_keys in server.close_advertisements().items():
        if active(node, ClientStage.SHARE_KEYS):
            server.receive_key_shares(clients[node].share_keys(neighbour_keys))
    for node, delivery in server.close_key_sharing().items():
        if active(node, ClientStage.MASKED_INPUT):
            masked = clients[node].masked_input(delivery, updates[node])
            log.masked_inputs[node] = masked
            server.receive_masked_input(masked)
            log.observe(server)
    for node, request in server.close_masked_inputs().items():
        if active(node, ClientStage.UNMASKING):
            server.receive_unmasking_shares(clients[node].unmasking(request))
            log.observe(server)
    result = server.finish()
    log.observe(server)
    return result


@pytest.fixture
def secagg_round() -> Callable[..., SecAggResult]:
    """The in-process round driver."""
    return drive_round


@pytest.fixture
def round_record() -> RoundRecord:
    """An empty record to pass to the driver."""
    return RoundRecord()
