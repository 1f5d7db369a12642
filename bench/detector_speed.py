"""Detector and simulator speed on this machine: scoring, local training, simulation, size.

Measures, each against a peer in the same run:
  * scoring one 1,000-node snapshot with score_snapshot (target < 20 ms), against the bare
    model forward pass and the original system's fixed-threshold rules;
  * one local epoch on a ~50-node region over its training window (400-node mesh, 8 regions);
  * simulating a 10,000-node mesh (placement, then per-step physics);
  * the model's size: parameters and safetensors bytes.
Prints one JSON line and writes bench/results/detector_speed.md.

    .venv/bin/python bench/detector_speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from fedmesh.mesh import (
    MeshConfig,
    build_mesh,
    simulate,
    snapshot_graphs,
    split_regions,
    split_windows,
)
from fedmesh.model import AnomalyDetector, save_detector, score_snapshot, train_local

RESULTS = Path(__file__).parent / "results" / "detector_speed.md"


@dataclass(frozen=True)
class Timing:
    p50_ms: float
    p90_ms: float
    runs: int

    @classmethod
    def of(cls, action: Callable[[], object], runs: int, warmup: int = 3) -> Timing:
        for _ in range(warmup):
            action()
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            action()
            samples.append((time.perf_counter() - started) * 1000.0)
        samples.sort()
        return cls(
            p50_ms=statistics.median(samples),
            p90_ms=samples[min(runs - 1, int(0.9 * runs))],
            runs=runs,
        )


@dataclass(frozen=True)
class Report:
    bench: str
    torch_threads: int
    cpus: int | None
    load_average_1m: float
    snapshot_nodes: int
    snapshot_edges: int
    score_snapshot: Timing
    bare_forward: Timing
    rule_baseline: Timing
    region_nodes: int
    region_snapshots: int
    local_epoch: Timing
    local_epoch_node_samples_per_s: float
    simulation_nodes: int
    simulation_links: int
    simulation_steps: int
    mesh_build_s: float
    simulation_s: float
    simulation_step_ms: float
    parameters: int
    safetensors_bytes: int


def rules(raw: torch.Tensor) -> torch.Tensor:
    """The original system's thresholds (DESIGN.md §8) on raw telemetry."""
    rssi, snr, loss, _, latency, throughput, cpu, memory = raw.unbind(dim=1)
    return (
        (rssi < -80.0)
        | (snr < 8.0)
        | (loss > 0.15)
        | (cpu > 85.0)
        | (memory > 85.0)
        | (latency > 100.0)
        | (throughput < 2.0)
    )


def measure(simulation_steps: int, scoring_runs: int, epoch_runs: int) -> Report:
    torch.manual_seed(0)
    model = AnomalyDetector()

    big = simulate(MeshConfig(num_nodes=1000), steps=5, seed=0)
    snapshot = snapshot_graphs(big, None, range(4, 5))[0]
    raw = big.features[4]
    bare = model.eval()

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            out: torch.Tensor = bare(snapshot.x, snapshot.edge_index)
            return out

    scoring = Timing.of(lambda: score_snapshot(model, snapshot), scoring_runs)
    forward_timing = Timing.of(forward, scoring_runs)
    rule_timing = Timing.of(lambda: rules(raw), scoring_runs)

    mesh400 = simulate(MeshConfig(num_nodes=400), steps=800, seed=0)
    windows = split_windows(mesh400.num_steps)
    region = max(split_regions(mesh400, 8, seed=0), key=lambda r: r.size)
    graphs = snapshot_graphs(mesh400, region, windows.train)
    learner = AnomalyDetector()
    counter = iter(range(10_000))
    epoch = Timing.of(
        lambda: train_local(learner, graphs, epochs=1, seed=next(counter)), epoch_runs, warmup=1
    )
    samples = region.size * len(graphs)

    config = MeshConfig(num_nodes=10_000)
    started = time.perf_counter()
    mesh = build_mesh(config, np.random.default_rng(0))
    mesh_build_s = time.perf_counter() - started
    started = time.perf_counter()
    simulate(config, steps=simulation_steps, seed=0)
    simulation_s = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "detector.safetensors"
        save_detector(model, path)
        size = path.stat().st_size

    return Report(
        bench="detector_speed",
        torch_threads=torch.get_num_threads(),
        cpus=os.cpu_count(),
        load_average_1m=os.getloadavg()[0],
        snapshot_nodes=big.num_nodes,
        snapshot_edges=int(snapshot.edge_index.shape[1]),
        score_snapshot=scoring,
        bare_forward=forward_timing,
        rule_baseline=rule_timing,
        region_nodes=region.size,
        region_snapshots=len(graphs),
        local_epoch=epoch,
        local_epoch_node_samples_per_s=samples / (epoch.p50_ms / 1000.0),
        simulation_nodes=config.num_nodes,
        simulation_links=mesh.num_links,
        simulation_steps=simulation_steps,
        mesh_build_s=mesh_build_s,
        simulation_s=simulation_s,
        simulation_step_ms=(simulation_s - mesh_build_s) / simulation_steps * 1000.0,
        parameters=sum(p.numel() for p in model.parameters()),
        safetensors_bytes=size,
    )


def markdown(r: Report) -> str:
    return "\n".join(
        [
            "# Detector speed (generated by bench/detector_speed.py)",
            "",
            f"CPU only, {r.torch_threads} torch thread(s), {r.cpus} CPUs shared with other jobs "
            f"(1-minute load average {r.load_average_1m:.1f} when measured: times are upper "
            "bounds); p50 / p90 over the stated runs.",
            "",
            "| what | p50 | p90 | runs |",
            "|---|---|---|---|",
            f"| score_snapshot, {r.snapshot_nodes} nodes / {r.snapshot_edges} directed edges "
            f"| {r.score_snapshot.p50_ms:.2f} ms | {r.score_snapshot.p90_ms:.2f} ms "
            f"| {r.score_snapshot.runs} |",
            f"| peer: bare forward pass (inference mode) | {r.bare_forward.p50_ms:.2f} ms "
            f"| {r.bare_forward.p90_ms:.2f} ms | {r.bare_forward.runs} |",
            f"| peer: original fixed-threshold rules | {r.rule_baseline.p50_ms:.3f} ms "
            f"| {r.rule_baseline.p90_ms:.3f} ms | {r.rule_baseline.runs} |",
            f"| one local epoch, {r.region_nodes}-node region × {r.region_snapshots} snapshots "
            f"| {r.local_epoch.p50_ms / 1000:.2f} s | {r.local_epoch.p90_ms / 1000:.2f} s "
            f"| {r.local_epoch.runs} |",
            "",
            f"Local training throughput: {r.local_epoch_node_samples_per_s:,.0f} node-samples/s; "
            f"a FedAvg round of 8 such clients, one after another: "
            f"≈ {8 * r.local_epoch.p50_ms / 1000:.1f} s.",
            "",
            f"Simulation of a {r.simulation_nodes:,}-node mesh ({r.simulation_links:,} links): "
            f"placement and links {r.mesh_build_s:.2f} s; {r.simulation_steps} steps in "
            f"{r.simulation_s:.2f} s in all, {r.simulation_step_ms:.1f} ms per step.",
            "",
            f"Model: {r.parameters:,} parameters; safetensors file {r.safetensors_bytes:,} bytes.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Detector and simulator speed")
    parser.add_argument("--simulation-steps", type=int, default=60)
    parser.add_argument("--scoring-runs", type=int, default=200)
    parser.add_argument("--epoch-runs", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; on a shared 2-core machine more than 1 thread is much slower",
    )
    parser.add_argument("--no-write", action="store_true", help="do not rewrite the results file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report = measure(args.simulation_steps, args.scoring_runs, args.epoch_runs)
    if not args.no_write:
        RESULTS.write_text(markdown(report))
    print(json.dumps(asdict(report), separators=(",", ":")))


if __name__ == "__main__":
    main()
