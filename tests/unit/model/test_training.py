import pytest
import torch
from torch_geometric.data import Data

from fedmesh.mesh import FaultRates, MeshConfig, simulate, snapshot_graphs
from fedmesh.model import AnomalyDetector, evaluate, train_local
from fedmesh.model.training import MAX_POS_WEIGHT, balanced_pos_weight


@pytest.fixture(scope="module")
def graphs() -> list[Data]:
    config = MeshConfig(num_nodes=60, faults=FaultRates(onset_rate=5e-3))
    return snapshot_graphs(simulate(config, steps=60, seed=1), None, range(0, 60))


def _weights(model: AnomalyDetector) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_training_reduces_the_loss(graphs: list[Data]) -> None:
    torch.manual_seed(0)
    model = AnomalyDetector()
    before = evaluate(model, graphs).loss

    stats = train_local(model, graphs, epochs=6, seed=0)

    after = evaluate(model, graphs).loss
    assert after < 0.6 * before
    assert stats.epoch_losses[-1] < stats.epoch_losses[0]
    assert stats.mean_loss == stats.epoch_losses[-1]
    assert len(stats.epoch_losses) == 6


def test_stats_count_the_scored_nodes(graphs: list[Data]) -> None:
    stats = train_local(AnomalyDetector(), graphs[:10], epochs=1, seed=0)

    labels = torch.cat([g.y for g in graphs[:10]])
    assert stats.samples == labels.numel()
    assert stats.positives == int(labels.sum())
    assert stats.positives > 0
    assert stats.pos_weight == balanced_pos_weight(stats.positives, stats.samples)


def test_same_seed_same_weights_and_global_rng_untouched(graphs: list[Data]) -> None:
    torch.manual_seed(0)
    first, second = AnomalyDetector(), AnomalyDetector()
    second.load_state_dict(first.state_dict())
    other = AnomalyDetector()
    other.load_state_dict(first.state_dict())
    rng_state = torch.get_rng_state()

    train_local(first, graphs[:20], epochs=2, seed=5)
    train_local(second, graphs[:20], epochs=2, generator=torch.Generator().manual_seed(5))
    train_local(other, graphs[:20], epochs=2, seed=6)

    assert torch.equal(torch.get_rng_state(), rng_state)
    assert all(torch.equal(a, b) for a, b in zip(_weights(first), _weights(second), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(_weights(first), _weights(other), strict=True))


def test_unscored_nodes_do_not_train(graphs: list[Data]) -> None:
    hidden = [g.clone() for g in graphs[:5]]
    for g in hidden:
        g.mask = torch.zeros(g.num_nodes, dtype=torch.bool)
    model = AnomalyDetector()

    with pytest.raises(ValueError, match="no scored nodes in the training graphs"):
        train_local(model, hidden)


def test_positive_weight_is_balanced_and_capped() -> None:
    assert balanced_pos_weight(positives=25, samples=100) == 3.0
    assert balanced_pos_weight(positives=1, samples=1000) == MAX_POS_WEIGHT
    assert balanced_pos_weight(positives=80, samples=100) == 1.0
    assert balanced_pos_weight(positives=0, samples=100) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be >= 1; got 0"),
        ({"lr": 0.0}, "learning rate must be > 0; got 0.0"),
        ({"batch_snapshots": 0}, "batch_snapshots must be >= 1; got 0"),
        ({"pos_weight": -1.0}, "pos_weight must be > 0; got -1.0"),
        ({"seed": 1, "generator": torch.Generator()}, "either seed or generator, not both"),
    ],
)
def test_bad_arguments_are_refused(
    graphs: list[Data], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        train_local(AnomalyDetector(), graphs[:3], **kwargs)  # type: ignore[arg-type]


def test_no_graphs_is_refused() -> None:
    with pytest.raises(ValueError, match="no graphs given"):
        train_local(AnomalyDetector(), [])
