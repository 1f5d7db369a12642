"""Local training of the detector on a node's (or a region's) own snapshots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional
from torch_geometric.data import Data

from fedmesh.model.batching import collate
from fedmesh.model.detector import AnomalyDetector

DEFAULT_LR = 1e-3
DEFAULT_BATCH_SNAPSHOTS = 8
MAX_POS_WEIGHT = 10.0
"""Cap on the positive-class weight: anomalies are rare, but an uncapped weight makes
scores of healthy nodes drift up and the severity bands lose their meaning."""


@dataclass(frozen=True)
class TrainStats:
    """What one call of ``train_local`` did; ``samples`` is the FedAvg weight."""

    mean_loss: float
    epoch_losses: tuple[float, ...]
    samples: int
    positives: int
    pos_weight: float


def balanced_pos_weight(positives: int, samples: int) -> float:
    """Weight of a positive in the loss: negatives per positive, within [1, MAX_POS_WEIGHT]."""
    if positives <= 0:
        return 1.0
    return min(MAX_POS_WEIGHT, max(1.0, (samples - positives) / positives))


def train_local(
    model: AnomalyDetector,
    graphs: Sequence[Data],
    epochs: int = 1,
    lr: float = DEFAULT_LR,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    batch_snapshots: int = DEFAULT_BATCH_SNAPSHOTS,
    pos_weight: float | None = None,
) -> TrainStats:
    """Train ``model`` in place with Adam on class-weighted BCE over the scored nodes.

    Snapshots are shuffled each epoch and ``batch_snapshots`` of them form one step; a
    fresh optimiser is made per call, as in a FedAvg round. Randomness (shuffling, dropout)
    comes from ``generator`` or ``seed`` (default 0), so the same inputs give the same
    weights; the global RNG state is left untouched. ``pos_weight`` defaults to
    ``balanced_pos_weight`` of the given graphs. Raises ``ValueError`` for bad arguments,
    malformed graphs or no scored node.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1; got {epochs}")
    if not lr > 0:
        raise ValueError(f"learning rate must be > 0; got {lr}")
    if batch_snapshots < 1:
        raise ValueError(f"batch_snapshots must be >= 1; got {batch_snapshots}")
    if seed is not None and generator is not None:
        raise ValueError("give either seed or generator, not both")
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
    everything = collate(graphs)
    samples = everything.scored
    if samples == 0:
        raise ValueError("no scored nodes in the training graphs; nothing to learn from")
    positives = int(everything.y[everything.mask].sum())
    weight = balanced_pos_weight(positives, samples) if pos_weight is None else pos_weight
    if not weight > 0:
        raise ValueError(f"pos_weight must be > 0; got {weight}")
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    epoch_losses: list[float] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        model.train()
        for _ in range(epochs):
            epoch_losses.append(
                _one_epoch(model, optimiser, graphs, batch_snapshots, weight, samples, generator)
            )
    return TrainStats(
        mean_loss=epoch_losses[-1],
        epoch_losses=tuple(epoch_losses),
        samples=samples,
        positives=positives,
        pos_weight=weight,
    )


def _one_epoch(
    model: AnomalyDetector,
    optimiser: torch.optim.Optimizer,
    graphs: Sequence[Data],
    batch_snapshots: int,
    pos_weight: float,
    samples: int,
    generator: torch.Generator,
) -> float:
    weight = torch.tensor(pos_weight)
    total = 0.0
    order = torch.randperm(len(graphs), generator=generator).tolist()
    for start in range(0, len(order), batch_snapshots):
        batch = collate([graphs[i] for i in order[start : start + batch_snapshots]])
        if batch.scored == 0:
            continue
        optimiser.zero_grad()
        logits = model(batch.x, batch.edge_index)[batch.mask]
        loss = functional.binary_cross_entropy_with_logits(
            logits, batch.y[batch.mask], pos_weight=weight
        )
        torch.autograd.backward(loss)
        optimiser.step()
        total += float(loss.detach()) * batch.scored
    return total / samples
