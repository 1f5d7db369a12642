import pytest
import torch

from fedmesh.model import AnomalyDetector


def test_one_logit_per_node() -> None:
    model = AnomalyDetector()
    x = torch.randn(30, 8)
    edge_index = torch.randint(0, 30, (2, 90))

    assert model(x, edge_index).shape == (30,)


def test_architecture_is_the_designed_one() -> None:
    model = AnomalyDetector()
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}

    assert shapes == {
        "conv1.lin_l.weight": (64, 8),
        "conv1.lin_l.bias": (64,),
        "conv1.lin_r.weight": (64, 8),
        "conv2.lin_l.weight": (64, 64),
        "conv2.lin_l.bias": (64,),
        "conv2.lin_r.weight": (64, 64),
        "gate.0.weight": (32, 64),
        "gate.0.bias": (32,),
        "gate.2.weight": (1, 32),
        "gate.2.bias": (1,),
        "head.0.weight": (32, 64),
        "head.0.bias": (32,),
        "head.2.weight": (1, 32),
        "head.2.bias": (1,),
    }
    assert model.dropout.p == 0.3
    assert isinstance(model.gate[3], torch.nn.Sigmoid)


def test_neighbours_change_a_nodes_score() -> None:
    torch.manual_seed(0)
    model = AnomalyDetector().eval()
    x = torch.randn(3, 8)
    alone = model(x, torch.zeros(2, 0, dtype=torch.long))
    linked = model(x, torch.tensor([[0, 1], [1, 0]]))

    assert not torch.allclose(alone[:2], linked[:2])
    assert torch.allclose(alone[2], linked[2])


def test_eval_mode_is_deterministic_and_training_mode_drops_out() -> None:
    torch.manual_seed(0)
    model = AnomalyDetector()
    x, edge_index = torch.randn(50, 8), torch.randint(0, 50, (2, 100))

    assert not torch.equal(model.train()(x, edge_index), model(x, edge_index))
    assert torch.equal(model.eval()(x, edge_index), model(x, edge_index))


@pytest.mark.parametrize(
    ("x", "edge_index", "message"),
    [
        (torch.zeros(5, 7), torch.zeros(2, 0, dtype=torch.long), r"x has shape \(5, 7\)"),
        (torch.zeros(5, 8), torch.zeros(3, 2, dtype=torch.long), r"edge_index has shape \(3, 2\)"),
    ],
)
def test_bad_inputs_are_refused(x: torch.Tensor, edge_index: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AnomalyDetector()(x, edge_index)
