from collections.abc import Callable

import pytest
import torch
from torch_geometric.data import Data

from fedmesh.model import FEATURE_NAMES, AnomalyDetector

CPU = FEATURE_NAMES.index("cpu")

SnapshotFactory = Callable[..., Data]


def _cpu_detector() -> AnomalyDetector:
    """Weights set by hand so that logit = relu(normalised cpu)."""
    model = AnomalyDetector()
    gate, hidden, out = model.gate[2], model.head[0], model.head[2]
    assert isinstance(gate, torch.nn.Linear)
    assert isinstance(hidden, torch.nn.Linear)
    assert isinstance(out, torch.nn.Linear)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.conv1.lin_r.weight[0, CPU] = 1.0
        model.conv2.lin_r.weight[0, 0] = 1.0
        gate.bias.fill_(30.0)  # an open gate: sigmoid(30) is 1 in float32
        hidden.weight[0, 0] = 1.0
        out.weight[0, 0] = 1.0
    return model


def _snapshot(
    cpu: list[float],
    labels: list[bool],
    kinds: list[int] | None = None,
    mask: list[bool] | None = None,
) -> Data:
    x = torch.zeros(len(cpu), 8)
    x[:, CPU] = torch.tensor(cpu)
    ring = torch.arange(len(cpu))
    data = Data(
        x=x,
        edge_index=torch.stack([ring, ring.roll(1)]),
        y=torch.tensor(labels, dtype=torch.float32),
    )
    if kinds is not None:
        data.fault_kind = torch.tensor(kinds)
    if mask is not None:
        data.mask = torch.tensor(mask)
    return data


@pytest.fixture
def cpu_detector() -> AnomalyDetector:
    return _cpu_detector()


@pytest.fixture
def snapshot() -> SnapshotFactory:
    return _snapshot
