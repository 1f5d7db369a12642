"""Detector quality: Local-only vs Federated vs Centralized on a 400-node simulated mesh.

Every arm trains the same AnomalyDetector on the training windows of the same 8 regions
and is scored on the held-out test window of all regions together: each node once per
step, and only fault instances that began after training ended. The original system's
fixed-threshold rules (DESIGN.md §8) are scored on the same nodes as a peer.
Prints one JSON line and writes bench/results/detector_quality.md.

    .venv/bin/python bench/detector_quality.py            # 3 seeds, about 6-10 minutes
    .venv/bin/python bench/detector_quality.py --seeds 0 --rounds 3   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import average_precision_score, f1_score
from torch.nn.utils import parameters_to_vector, vector_to_parameters
from torch_geometric.data import Data

from fedmesh.aggregation import fedavg
from fedmesh.mesh import (
    MeshConfig,
    TelemetrySeries,
    simulate,
    snapshot_graphs,
    split_regions,
    split_windows,
)
from fedmesh.model import FAULT_KINDS, AnomalyDetector, choose_threshold, evaluate, train_local

NODES = 400
CLIENTS = 8
STEPS = 800
BATCH_SNAPSHOTS = 8
ARMS = ("local_only", "federated", "centralized", "rule_baseline")
RESULTS = Path(__file__).parent / "results" / "detector_quality.md"


@dataclass(frozen=True)
class ArmResult:
    macro_f1: float
    anomaly_f1: float
    pr_auc: float
    recall_per_kind: dict[str, float]
    threshold: float | None


@dataclass(frozen=True)
class SeedResult:
    seed: int
    arms: dict[str, ArmResult]
    local_only_per_client_macro_f1: list[float]
    test_samples: int
    test_positives: int
    region_sizes: list[int]
    region_fault_mix: list[dict[str, float]]
    federated_round_seconds: float
    seconds: float


@dataclass(frozen=True)
class Client:
    train: list[Data]
    validation: list[Data]


def train_federated(clients: list[Client], rounds: int, seed: int) -> tuple[AnomalyDetector, float]:
    """FedAvg: each round every client trains one local epoch from the global weights."""
    torch.manual_seed(seed)
    model = AnomalyDetector()
    started = time.perf_counter()
    for round_index in range(rounds):
        global_weights = parameters_to_vector(model.parameters()).detach()
        deltas, samples = [], []
        for index, client in enumerate(clients):
            local = AnomalyDetector()
            vector_to_parameters(global_weights.clone(), local.parameters())
            stats = train_local(
                local,
                client.train,
                epochs=1,
                seed=(seed * 1000 + round_index) * 100 + index,
                batch_snapshots=BATCH_SNAPSHOTS,
            )
            deltas.append(parameters_to_vector(local.parameters()).detach() - global_weights)
            samples.append(float(stats.samples))
        # The same rule code the aggregator service runs, weighted by local sample counts.
        update = fedavg(torch.stack(deltas), samples).aggregate
        vector_to_parameters(global_weights + update, model.parameters())
    return model, (time.perf_counter() - started) / rounds


def train_alone(graphs: list[Data], epochs: int, seed: int) -> AnomalyDetector:
    """One model on one data set, epoch by epoch with the same schedule as a FedAvg round."""
    torch.manual_seed(seed)
    model = AnomalyDetector()
    for epoch in range(epochs):
        train_local(
            model, graphs, epochs=1, seed=seed * 1000 + epoch, batch_snapshots=BATCH_SNAPSHOTS
        )
    return model


def detector_result(model: AnomalyDetector, validation: list[Data], test: list[Data]) -> ArmResult:
    threshold = choose_threshold(model, validation)
    metrics = evaluate(model, test, threshold)
    return ArmResult(
        macro_f1=metrics.macro_f1,
        anomaly_f1=metrics.anomaly_f1,
        pr_auc=metrics.pr_auc if metrics.pr_auc is not None else float("nan"),
        recall_per_kind=metrics.recall_per_kind,
        threshold=threshold,
    )


def rule_result(series: TelemetrySeries, test: list[Data]) -> ArmResult:
    """The original system's fixed thresholds; the score is the share of its six rules firing."""
    raw = torch.cat([series.features[g.step, g.node_id][g.mask] for g in test]).numpy()
    truth = torch.cat([g.y[g.mask] for g in test]).numpy().astype(bool)
    kinds = torch.cat([g.fault_kind[g.mask] for g in test]).numpy()
    rssi, snr, loss, _, latency, throughput, cpu, memory = raw.T
    fired = np.stack(
        [
            rssi < -80.0,
            snr < 8.0,
            loss > 0.15,
            (cpu > 85.0) | (memory > 85.0),
            latency > 100.0,
            throughput < 2.0,
        ]
    )
    score = fired.mean(axis=0)
    flagged = score > 0
    return ArmResult(
        macro_f1=float(f1_score(truth, flagged, average="macro")),
        anomaly_f1=float(f1_score(truth, flagged)),
        pr_auc=float(average_precision_score(truth, score)),
        recall_per_kind={
            k.label: float(flagged[kinds == k].mean()) for k in FAULT_KINDS if (kinds == k).any()
        },
        threshold=None,
    )


def mean_result(results: list[ArmResult]) -> ArmResult:
    kinds = sorted({k for r in results for k in r.recall_per_kind})
    return ArmResult(
        macro_f1=statistics.mean(r.macro_f1 for r in results),
        anomaly_f1=statistics.mean(r.anomaly_f1 for r in results),
        pr_auc=statistics.mean(r.pr_auc for r in results),
        recall_per_kind={
            k: statistics.mean(r.recall_per_kind[k] for r in results if k in r.recall_per_kind)
            for k in kinds
        },
        threshold=None,
    )


def run_seed(seed: int, rounds: int) -> SeedResult:
    started = time.perf_counter()
    series = simulate(MeshConfig(num_nodes=NODES), STEPS, seed)
    windows = split_windows(series.num_steps)
    regions = split_regions(series, CLIENTS, seed)
    clients = [
        Client(
            train=snapshot_graphs(series, region, windows.train),
            validation=snapshot_graphs(series, region, windows.validation),
        )
        for region in regions
    ]
    test = [g for region in regions for g in snapshot_graphs(series, region, windows.test)]
    pooled_validation = [g for c in clients for g in c.validation]
    pooled_train = [g for c in clients for g in c.train]

    local = [
        detector_result(train_alone(c.train, rounds, seed * 10 + i), c.validation, test)
        for i, c in enumerate(clients)
    ]
    federated, round_seconds = train_federated(clients, rounds, seed)
    centralized = train_alone(pooled_train, rounds, seed)
    scored = torch.cat([g.mask for g in test])
    return SeedResult(
        seed=seed,
        arms={
            "local_only": mean_result(local),
            "federated": detector_result(federated, pooled_validation, test),
            "centralized": detector_result(centralized, pooled_validation, test),
            "rule_baseline": rule_result(series, test),
        },
        local_only_per_client_macro_f1=[r.macro_f1 for r in local],
        test_samples=int(scored.sum()),
        test_positives=int(torch.cat([g.y for g in test])[scored].sum()),
        region_sizes=[r.size for r in regions],
        region_fault_mix=[r.fault_mix(series) for r in regions],
        federated_round_seconds=round_seconds,
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class Spread:
    mean: float
    std: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        """Mean and sample standard deviation over seeds."""
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(mean=statistics.mean(values), std=std)


@dataclass(frozen=True)
class ArmSummary:
    macro_f1: Spread
    anomaly_f1: Spread
    pr_auc: Spread
    recall_per_kind: dict[str, float]


@dataclass(frozen=True)
class Report:
    bench: str
    nodes: int
    clients: int
    steps: int
    rounds: int
    seeds: list[int]
    arms: dict[str, ArmSummary]
    federated_minus_local_only_macro_f1: Spread
    centralized_minus_federated_macro_f1: Spread
    federated_round_seconds: float
    seconds: float
    cpus: int | None
    load_average_1m: float
    runs: list[SeedResult]


def summarise(runs: list[SeedResult], rounds: int) -> Report:
    def macro(arm: str) -> list[float]:
        return [run.arms[arm].macro_f1 for run in runs]

    arms = {
        arm: ArmSummary(
            macro_f1=Spread.of(macro(arm)),
            anomaly_f1=Spread.of([run.arms[arm].anomaly_f1 for run in runs]),
            pr_auc=Spread.of([run.arms[arm].pr_auc for run in runs]),
            recall_per_kind=mean_result([run.arms[arm] for run in runs]).recall_per_kind,
        )
        for arm in ARMS
    }
    pairs = zip(macro("federated"), macro("local_only"), macro("centralized"), strict=True)
    gains, gaps = zip(*[(fed - loc, cen - fed) for fed, loc, cen in pairs], strict=True)
    return Report(
        bench="detector_quality",
        nodes=NODES,
        clients=CLIENTS,
        steps=STEPS,
        rounds=rounds,
        seeds=[run.seed for run in runs],
        arms=arms,
        federated_minus_local_only_macro_f1=Spread.of(list(gains)),
        centralized_minus_federated_macro_f1=Spread.of(list(gaps)),
        federated_round_seconds=statistics.mean(run.federated_round_seconds for run in runs),
        seconds=sum(run.seconds for run in runs),
        cpus=os.cpu_count(),
        load_average_1m=os.getloadavg()[0],
        runs=runs,
    )


def markdown(report: Report) -> str:
    names = {
        "local_only": "Local-only (mean of 8 clients)",
        "federated": "Federated (FedAvg)",
        "centralized": "Centralized (pooled data)",
        "rule_baseline": "Rule baseline (original thresholds)",
    }
    kinds = [k.label for k in FAULT_KINDS]
    lines = [
        "# Detector quality (generated by bench/detector_quality.py)",
        "",
        f"{report.nodes}-node mesh, {report.clients} clients, {report.steps} steps "
        f"(train 60 % / validation 20 % / held-out test 20 %), {report.rounds} rounds of one "
        f"local epoch (the other arms: as many epochs), seeds {report.seeds}; "
        "mean ± sample std over seeds, on the held-out test window of all regions. "
        "Macro-F1 averages the F1 of the healthy and the anomalous class; anomaly F1 is the "
        "latter alone. Recall per kind is at each arm's validation-chosen threshold (the rules: "
        "any rule firing).",
        "",
        "| arm | macro-F1 | anomaly F1 | PR-AUC | "
        + " | ".join(f"recall {k}" for k in kinds)
        + " |",
        "|---|---|---|---|" + "---|" * len(kinds),
    ]
    for arm in ARMS:
        row = report.arms[arm]
        cells = [
            names[arm],
            f"{row.macro_f1.mean:.3f} ± {row.macro_f1.std:.3f}",
            f"{row.anomaly_f1.mean:.3f} ± {row.anomaly_f1.std:.3f}",
            f"{row.pr_auc.mean:.3f} ± {row.pr_auc.std:.3f}",
            *(f"{row.recall_per_kind[k]:.2f}" if k in row.recall_per_kind else "–" for k in kinds),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    gain = report.federated_minus_local_only_macro_f1
    gap = report.centralized_minus_federated_macro_f1
    lines += [
        "",
        f"Federated − Local-only macro-F1: {gain.mean:+.3f} ± {gain.std:.3f}; "
        f"Centralized − Federated: {gap.mean:+.3f} ± {gap.std:.3f}.",
        f"Mean FedAvg round (8 clients × 1 local epoch, one after another on one CPU thread): "
        f"{report.federated_round_seconds:.2f} s; whole bench {report.seconds:.0f} s "
        f"({report.cpus} CPUs shared with other jobs, 1-minute load average "
        f"{report.load_average_1m:.1f} at the end: times are upper bounds).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--no-write", action="store_true", help="do not rewrite the results file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = [run_seed(seed, args.rounds) for seed in args.seeds]
    report = summarise(runs, args.rounds)
    if not args.no_write:
        RESULTS.write_text(markdown(report))
    print(json.dumps(asdict(report), separators=(",", ":")))


if __name__ == "__main__":
    main()
