"""Robustness: test accuracy of every rule under every attack on non-IID digits.

Run: .venv/bin/python bench/robustness.py [--quick]

sklearn's `digits` (8×8 images, 10 classes) is split by label over n=25 clients
(two label-sorted shards each), f=5 of them Byzantine. A 64-32-10 MLP is trained
by federated SGD: each round every client sends its (momentum) gradient on a
minibatch, the server aggregates with the rule and steps. Every rule × every
attack, with and without bucketing (s=2), worker momentum 0.9 or none; mean
test accuracy over 3 seeds. Prints one JSON line and writes
bench/results/robustness.md.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sklearn.datasets import load_digits

from fedmesh.aggregation import (
    InsufficientUpdatesError,
    Rule,
    RuleSpec,
    aggregate,
)
from fedmesh.aggregation.attacks import (
    alie,
    flip_labels,
    gaussian_noise,
    ipm,
    mimic,
    scaling,
    sign_flip,
)

RESULTS = Path(__file__).resolve().parent / "results"
CLIENTS = 25
BYZANTINE = 5
CLASSES = 10
HIDDEN = 32
BATCH = 16
LEARNING_RATE = 0.5
MOMENTUM = 0.9
ATTACKS = ["none", "sign_flip", "gaussian", "scaling", "label_flip", "alie", "ipm", "mimic"]
# Radii on the scale of honest messages here (their spread is about 0.5–2).
TAU = 1.0
NORM_BOUND = 1.0


@dataclass(frozen=True)
class Federation:
    """Each client's local data (equal sizes) and the shared test set."""

    features: torch.Tensor  # clients × k × 64
    labels: torch.Tensor  # clients × k
    test_features: torch.Tensor
    test_labels: torch.Tensor


def split_non_iid(seed: int) -> Federation:
    """Sort the training images by label, cut 2 shards per client, deal them out at random."""
    digits = load_digits()
    features = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.int64)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    test_size = len(labels) // 5
    test, train = order[:test_size], order[test_size:]
    train = train[torch.argsort(labels[train], stable=True)]
    shards = 2 * CLIENTS
    shard = len(train) // shards
    dealt = torch.randperm(shards, generator=generator).view(CLIENTS, 2)
    rows = torch.stack(
        [torch.cat([train[s * shard : (s + 1) * shard] for s in pair.tolist()]) for pair in dealt]
    )
    return Federation(features[rows], labels[rows], features[test], labels[test])


def parameter_count() -> int:
    return HIDDEN * 64 + HIDDEN + CLASSES * HIDDEN + CLASSES


def logits(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The MLP 64 → 32 (ReLU) → 10, its weights unpacked from one flat vector."""
    w1_end = HIDDEN * 64
    b1_end = w1_end + HIDDEN
    w2_end = b1_end + CLASSES * HIDDEN
    w1 = theta[:w1_end].view(HIDDEN, 64)
    w2 = theta[b1_end:w2_end].view(CLASSES, HIDDEN)
    hidden = torch.relu(x @ w1.T + theta[w1_end:b1_end])
    return hidden @ w2.T + theta[w2_end:]


def loss(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits(theta, x), y)


per_client_gradient = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))


def initial_weights(seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    first, second = torch.nn.Linear(64, HIDDEN), torch.nn.Linear(HIDDEN, CLASSES)
    parts = [first.weight, first.bias, second.weight, second.bias]
    return torch.cat([p.detach().reshape(-1) for p in parts])


def byzantine_messages(
    attack: str, honest: torch.Tensor, own: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """What the f Byzantine clients send this round."""
    if attack in ("none", "label_flip"):
        return own
    if attack == "sign_flip":
        return sign_flip(own)
    if attack == "scaling":
        return scaling(own, 20.0)
    if attack == "gaussian":
        return gaussian_noise(honest, BYZANTINE, std=1.0, generator=generator)
    if attack == "alie":
        return alie(honest, BYZANTINE, CLIENTS)
    if attack == "ipm":
        return ipm(honest, BYZANTINE, epsilon=0.1)
    return mimic(honest, BYZANTINE)


Aggregator = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
"""(messages n×m, previous step, round index) → this round's step."""


def over_updates(spec: RuleSpec) -> Aggregator:
    """The rule over the individual messages (this bench's aggregation)."""

    def step(sent: torch.Tensor, previous: torch.Tensor, round_index: int) -> torch.Tensor:
        return aggregate(spec, sent, reference=previous).aggregate

    return step


def train(
    spec: RuleSpec, attack: str, momentum: float, seed: int, rounds: int, data: Federation
) -> float:
    """Train for `rounds` rounds with `spec`'s rule and return the test accuracy (NaN if
    the model diverged)."""
    return train_with(over_updates(spec), attack, momentum, seed, rounds, data)


def train_with(
    aggregator: Aggregator, attack: str, momentum: float, seed: int, rounds: int, data: Federation
) -> float:
    """Train with any aggregation step (bench/robust_secure.py passes secure buckets).

    The random draws (minibatches, Gaussian attack) depend only on the seed, so every
    aggregation step sees the same messages in round one.
    """
    generator = torch.Generator().manual_seed(seed + 1)
    theta = initial_weights(seed)
    labels = data.labels.clone()
    honest_count = CLIENTS - BYZANTINE
    if attack == "label_flip":
        labels[honest_count:] = flip_labels(labels[honest_count:], CLASSES)
    local = data.features.shape[1]
    buffers = torch.zeros(CLIENTS, theta.numel())
    previous = torch.zeros_like(theta)
    for round_index in range(rounds):
        picks = torch.randint(0, local, (CLIENTS, BATCH), generator=generator)
        x = torch.gather(data.features, 1, picks[:, :, None].expand(-1, -1, 64))
        y = torch.gather(labels, 1, picks)
        gradients = per_client_gradient(theta, x, y)
        buffers = momentum * buffers + (1 - momentum) * gradients if momentum else gradients
        honest = buffers[:honest_count]
        sent = torch.cat(
            [honest, byzantine_messages(attack, honest, buffers[honest_count:], generator)]
        )
        step = aggregator(sent, previous, round_index)
        previous = step
        theta = theta - LEARNING_RATE * step
        if not bool(torch.isfinite(theta).all()):
            return math.nan
    predictions = logits(theta, data.test_features).argmax(dim=1)
    return float((predictions == data.test_labels).float().mean())


def rule_specs(bucket_size: int) -> dict[str, RuleSpec]:
    return {
        rule.value: RuleSpec(
            rule,
            f=BYZANTINE,
            bucket_size=bucket_size,
            tau=TAU,
            clipping_iterations=3,
            norm_bound=NORM_BOUND,
        )
        for rule in Rule
    }


def run_grid(
    seeds: list[int], rounds: int, progress: Callable[[str], None]
) -> dict[str, dict[str, dict[str, dict[str, float | None]]]]:
    """Mean accuracy per momentum, bucketing, rule and attack (None: too few for the rule)."""
    federations = {seed: split_non_iid(seed) for seed in seeds}
    table: dict[str, dict[str, dict[str, dict[str, float | None]]]] = {}
    for momentum in (0.0, MOMENTUM):
        momentum_key = f"momentum_{momentum:g}"
        for bucket_size in (0, 2):
            bucket_key = "bucketing_2" if bucket_size else "no_bucketing"
            for name, spec in rule_specs(bucket_size).items():
                row: dict[str, float | None] = {}
                for attack in ATTACKS:
                    try:
                        scores = [
                            train(spec, attack, momentum, seed, rounds, federations[seed])
                            for seed in seeds
                        ]
                    except InsufficientUpdatesError:
                        row[attack] = None
                        continue
                    row[attack] = round(statistics.fmean(scores), 4)
                table.setdefault(momentum_key, {}).setdefault(bucket_key, {})[name] = row
                progress(f"{momentum_key} {bucket_key} {name}: {row}")
    return table


def worst_case(row: dict[str, float | None]) -> float | None:
    values = [v for a, v in row.items() if a != "none" and v is not None]
    if not values:
        return None
    return min(0.0 if math.isnan(v) else v for v in values)


def cell(value: float | None) -> str:
    if value is None:
        return "n/a"
    if math.isnan(value):
        return "diverged"
    return f"{100 * value:.1f}"


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        "# Robustness on non-IID digits",
        "",
        f"n={CLIENTS} clients (two label-sorted shards each), f={BYZANTINE} Byzantine, "
        f"MLP 64-{HIDDEN}-10, federated SGD with minibatch {BATCH}, lr {LEARNING_RATE}, "
        f"{summary['rounds']} rounds; mean test accuracy (%) over seeds {summary['seeds']}. "
        f"Centered clipping: τ={TAU}, 3 iterations from the previous aggregate; norm bounding "
        f"M={NORM_BOUND}; bucketing s=2. `n/a`: too few buckets for the rule "
        "(Bulyan needs 4f+3 = 23 inputs, buckets of 2 leave 13). Worst = lowest accuracy "
        f"over the attacks. Runtime {summary['seconds']:.0f} s "
        f"(`.venv/bin/python bench/robustness.py{' --quick' if summary['quick'] else ''}`).",
        "",
    ]
    for momentum_key, by_bucket in summary["accuracy"].items():
        for bucket_key, rows in by_bucket.items():
            momentum = momentum_key.split("_")[1]
            bucketing = "buckets of 2" if bucket_key == "bucketing_2" else "no bucketing"
            lines += [
                f"## Worker momentum {momentum}, {bucketing}",
                "",
                "| rule | " + " | ".join(ATTACKS) + " | worst |",
                "| --- | " + " | ".join("---:" for _ in ATTACKS) + " | ---: |",
            ]
            for rule, row in rows.items():
                cells = " | ".join(cell(row[a]) for a in ATTACKS)
                lines.append(f"| {rule} | {cells} | {cell(worst_case(row))} |")
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed and 20 rounds")
    parser.add_argument("--rounds", type=int, default=120)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [0] if args.quick else [0, 1, 2]
    rounds = 20 if args.quick else args.rounds
    started = time.perf_counter()
    table = run_grid(seeds, rounds, lambda line: print(line, flush=True, file=sys.stderr))
    summary: dict[str, Any] = {
        "bench": "robustness",
        "clients": CLIENTS,
        "byzantine": BYZANTINE,
        "rounds": rounds,
        "seeds": seeds,
        "quick": args.quick,
        "accuracy": table,
        "worst_case": {
            m: {b: {r: worst_case(row) for r, row in rows.items()} for b, rows in by_b.items()}
            for m, by_b in table.items()
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    name = "robustness-quick.md" if args.quick else "robustness.md"
    (RESULTS / name).write_text(markdown(summary))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
