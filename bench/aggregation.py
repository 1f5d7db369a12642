"""Aggregation speed: every fedmesh rule against Flower's and ByzFL's on the same arrays.

Run: .venv/bin/python bench/aggregation.py [--n 25 --m 1000000 --f 5] [--threads 2] [--device cuda]

The peers run in their own virtualenv (bench/peers/.venv, created from
bench/peers/requirements.txt when missing) in a subprocess that loads the same
arrays from a temporary .npy file. Prints one JSON line and writes
bench/results/aggregation.md (aggregation-cuda.md for a GPU run,
aggregation-Nthreads.md for N threads).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
PEERS = ROOT / "peers"
PEER_PYTHON = PEERS / ".venv" / "bin" / "python"
RESULTS = ROOT / "results"

# Rules with the same definition in a peer: their outputs are compared, not only timed.
SAME_DEFINITION = {
    "fedavg": ("flower", "byzfl"),
    "median": ("flower", "byzfl"),
    "trimmed_mean": ("flower", "byzfl"),
    "krum": ("flower",),
    "multi_krum": ("flower",),
    "bulyan": ("flower",),
    "norm_bounding": ("byzfl",),
}
# Parameters shared by both sides so that each pair computes the same thing.
GEOMETRIC_MEDIAN_SMOOTHING = 0.1
CLIPPING_TAU = 100.0
NORM_BOUND = 2.0
BUCKET_SIZE = 2


def timed(
    call: Callable[..., object],
    repeat: int,
    budget_s: float,
    fresh: Callable[[], object] | None = None,
) -> float:
    """Best wall time of `call` in ms after a warm-up run, stopping early past the budget.

    The best of several runs is the one least disturbed by other work on a shared
    machine. With `fresh`, each run gets a new argument made outside the clock
    (for a peer that modifies its input in place).
    """
    arguments = () if fresh is None else (fresh(),)
    call(*arguments)
    times: list[float] = []
    while len(times) < repeat:
        arguments = () if fresh is None else (fresh(),)
        start = time.perf_counter()
        call(*arguments)
        times.append(time.perf_counter() - start)
        if sum(times) > budget_s:
            break
    return min(times) * 1e3


def make_updates(n: int, m: int, f: int, seed: int) -> np.ndarray:
    """n−f honest updates around a common direction and f sign-flipped, scaled ones."""
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(m, dtype=np.float32) * 0.01
    updates = direction + rng.standard_normal((n, m), dtype=np.float32) * 0.01
    updates[n - f :] *= -10.0
    return updates


# --- peers: runs inside bench/peers/.venv, where fedmesh is not installed ------------


def run_peers(path: str, f: int, repeat: int, budget_s: float, outputs: str) -> None:
    """Time Flower's and ByzFL's functions on the arrays at `path`; print JSON timings."""
    import importlib.util
    import types

    import torch

    # byzfl/__init__.py also loads its training benchmark, which needs torchvision's
    # compiled ops (absent beside a CPU-only torch); register the package without
    # running it so that only the aggregator modules load.
    spec = importlib.util.find_spec("byzfl")
    assert spec is not None
    assert spec.submodule_search_locations is not None
    package = types.ModuleType("byzfl")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["byzfl"] = package
    from byzfl.aggregators import aggregators as bz
    from byzfl.aggregators import preaggregators as bzp
    from flwr.server.strategy import aggregate as fl

    updates = np.load(path)
    n = updates.shape[0]
    results = [([row], 1) for row in updates]
    flower: dict[str, Callable[[], Any]] = {
        "fedavg": lambda: fl.aggregate(results),
        "krum": lambda: fl.aggregate_krum(results, f, 0),
        "multi_krum": lambda: fl.aggregate_krum(results, f, n - f),
        "median": lambda: fl.aggregate_median(results),
        "trimmed_mean": lambda: fl.aggregate_trimmed_avg(results, f / n),
        # aggregate_bulyan pops from the list it is given.
        "bulyan": lambda: fl.aggregate_bulyan(list(results), f, fl.aggregate_krum, to_keep=0),
    }
    byzfl: dict[str, Callable[[Any], Any]] = {
        "fedavg": lambda data: bz.Average()(data),
        "krum": lambda data: bz.Krum(f)(data),
        "multi_krum": lambda data: bz.MultiKrum(f)(data),
        "median": lambda data: bz.Median()(data),
        "trimmed_mean": lambda data: bz.TrMean(f)(data),
        "geometric_median": lambda data: bz.GeometricMedian(nu=GEOMETRIC_MEDIAN_SMOOTHING, T=3)(
            data
        ),
        "centered_clipping": lambda data: bz.CenteredClipping(L=1, tau=CLIPPING_TAU)(data),
        "norm_bounding": lambda data: bz.Average()(bzp.Clipping(c=NORM_BOUND)(data)),
        "bucketing_median": lambda data: bz.Median()(bzp.Bucketing(s=BUCKET_SIZE)(data)),
    }
    report: dict[str, dict[str, Any]] = {}
    answers: dict[str, np.ndarray] = {}
    for rule, flower_call in flower.items():
        report.setdefault(rule, {})["flower_ms"] = timed(flower_call, repeat, budget_s)
        answers[f"flower_{rule}"] = np.array(flower_call()[0], dtype=np.float32)
    for rule, byzfl_call in byzfl.items():
        # ByzFL runs numpy arrays through numpy and tensors through torch: keep the faster.
        # Its Clipping scales rows in place, so every run gets its own copy, made off the clock.
        best: tuple[float, str] | None = None
        for kind in ("numpy", "torch"):

            def fresh(kind: str = kind, rule: str = rule) -> Any:
                data = updates.copy() if rule == "norm_bounding" else updates
                return data if kind == "numpy" else torch.from_numpy(data)

            elapsed = timed(byzfl_call, repeat, budget_s, fresh)
            if best is None or elapsed < best[0]:
                best = (elapsed, kind)
        assert best is not None
        report.setdefault(rule, {}).update(byzfl_ms=best[0], byzfl_input=best[1])
        answers[f"byzfl_{rule}"] = np.array(byzfl_call(updates.copy()), dtype=np.float32)
    np.savez(outputs, **answers)  # type: ignore[arg-type]
    print(json.dumps(report))


# --- fedmesh -------------------------------------------------------------------------


def ensure_peer_venv() -> None:
    """Create bench/peers/.venv from requirements.txt unless it is already there."""
    if PEER_PYTHON.exists():
        return
    print("creating bench/peers/.venv (first run only)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(PEERS / ".venv")], check=True)
    subprocess.run(
        [str(PEER_PYTHON), "-m", "pip", "install", "-q", "-r", str(PEERS / "requirements.txt")],
        check=True,
    )


def fedmesh_specs(f: int) -> dict[str, Any]:
    """The RuleSpec for each benchmarked row, parameters matched to the peers'."""
    from fedmesh.aggregation import Rule, RuleSpec

    return {
        "fedavg": RuleSpec(Rule.FEDAVG),
        "krum": RuleSpec(Rule.KRUM, f=f),
        "multi_krum": RuleSpec(Rule.MULTI_KRUM, f=f),
        "median": RuleSpec(Rule.MEDIAN, f=f),
        "trimmed_mean": RuleSpec(Rule.TRIMMED_MEAN, f=f),
        "bulyan": RuleSpec(Rule.BULYAN, f=f),
        "geometric_median": RuleSpec(Rule.GEOMETRIC_MEDIAN, f=f),
        "centered_clipping": RuleSpec(
            Rule.CENTERED_CLIPPING, f=f, tau=CLIPPING_TAU, clipping_iterations=1
        ),
        "norm_bounding": RuleSpec(Rule.NORM_BOUNDING, norm_bound=NORM_BOUND),
        "bucketing_median": RuleSpec(Rule.MEDIAN, f=f, bucket_size=BUCKET_SIZE),
    }


def run_fedmesh(
    updates_np: np.ndarray, f: int, device: str, repeat: int, budget_s: float
) -> tuple[dict[str, float], float, dict[str, np.ndarray]]:
    """Time every fedmesh rule and the one-pass floor; return (ms per rule, floor ms, outputs)."""
    import torch

    from fedmesh.aggregation import aggregate

    updates = torch.from_numpy(updates_np).to(device)

    def synced(call: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            out = call()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            return out

        return run

    timings: dict[str, float] = {}
    outputs: dict[str, np.ndarray] = {}
    for name, spec in fedmesh_specs(f).items():

        def call(spec: Any = spec) -> Any:
            return aggregate(spec, updates)

        timings[name] = timed(synced(call), repeat, budget_s)
        outputs[name] = call().aggregate.cpu().numpy()
    # The floor: the input read once (a full reduction touches every byte once).
    floor = timed(synced(lambda: updates.sum()), repeat * 3, budget_s)
    return timings, floor, outputs


def streaming_peak_mb(n: int, m: int, threads: int) -> float:
    """Peak RSS growth (MiB) of a fresh process that FedAvgs n generated updates of m floats.

    The kernel's high-water mark is reset after the imports (/proc/self/clear_refs),
    so only what the streaming mean holds counts.
    """
    code = (
        "import torch\n"
        "from fedmesh.aggregation import StreamingMean\n"
        f"torch.set_num_threads({threads})\n"
        "def status(key):\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith(key):\n"
        "            return int(line.split()[1])\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "base = status('VmRSS:')\n"
        f"stream = StreamingMean({m})\n"
        f"update = torch.empty({m})\n"
        "generator = torch.Generator().manual_seed(0)\n"
        f"for i in range({n}):\n"
        "    torch.randn(update.shape, generator=generator, out=update)\n"
        "    stream.add(update, float(i + 1))\n"
        "stream.result()\n"
        "print((status('VmHWM:') - base) / 1024)\n"
    )
    return float(run_checked([sys.executable, "-c", code]).strip())


def run_checked(command: list[str]) -> str:
    """Run a command and return its stdout; on failure, raise with its stderr."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{command[:2]} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout


def run_peer_worker(path: str, outputs: str, args: argparse.Namespace) -> str:
    """Run `run_peers` in the peers' virtualenv with the same thread count; return its stdout."""
    threads = str(args.threads)
    command = [str(PEER_PYTHON), __file__, "--peer-worker", path, outputs]
    command += ["--f", str(args.f), "--repeat", str(args.repeat), "--budget", str(args.budget)]
    command += ["--threads", threads]
    environment = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=environment)
    if done.returncode != 0:
        raise RuntimeError(f"peer worker failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout


def compare(
    ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Largest absolute difference between our output and each same-definition peer's."""
    differences: dict[str, dict[str, float]] = {}
    for rule, peers in SAME_DEFINITION.items():
        for peer in peers:
            key = f"{peer}_{rule}"
            if key in theirs:
                gap = float(np.max(np.abs(ours[rule] - theirs[key].reshape(-1))))
                differences.setdefault(rule, {})[peer] = gap
    return differences


def markdown(summary: dict[str, Any]) -> str:
    """The results page."""
    lines = [
        f"# Aggregation speed ({summary['device']})",
        "",
        f"n={summary['n']} updates of m={summary['m']:,} float32, f={summary['f']}; "
        f"{summary['machine']}, {summary['threads']} thread(s) on both sides. Best of "
        f"{summary['rounds']} turns × up to {summary['repeat']} runs after a warm-up, peers and "
        "fedmesh taking turns in the same run "
        f"(`.venv/bin/python bench/aggregation.py --threads {summary['threads']}`).",
        "",
        f"One pass over the input (the floor): **{summary['floor_ms']:.1f} ms**.",
        "",
        "| rule | fedmesh ms | Flower ms | ByzFL ms | fastest peer / fedmesh | "
        "Flower / fedmesh | max abs diff vs peer |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for rule, row in summary["rules"].items():
        flower = f"{row['flower_ms']:.1f}" if "flower_ms" in row else "—"
        byzfl = f"{row['byzfl_ms']:.1f} ({row['byzfl_input']})" if "byzfl_ms" in row else "—"
        fastest = (
            f"{row['speedup_vs_fastest_peer']:.1f}×" if "speedup_vs_fastest_peer" in row else "—"
        )
        vs_flower = f"{row['speedup_vs_flower']:.1f}×" if "speedup_vs_flower" in row else "—"
        diffs = ", ".join(f"{p} {d:.1e}" for p, d in row.get("max_abs_diff", {}).items()) or "—"
        lines.append(
            f"| {rule} | {row['fedmesh_ms']:.1f} | {flower} | {byzfl} | {fastest} | "
            f"{vs_flower} | {diffs} |"
        )
    peak = summary["fedavg_streaming_peak_mib"]
    lines += [
        "",
        f"FedAvg is **{summary['fedavg_vs_floor']:.2f}×** the one-pass floor.",
        "",
        f"Peak memory of streaming FedAvg (`StreamingMean`) at m={summary['memory_m']:,}: "
        + ", ".join(f"n={n}: {mib:.0f} MiB" for n, mib in peak.items())
        + " (one accumulator and one update, whatever n).",
        "",
        "ByzFL runs numpy input through numpy and tensors through torch; the faster is shown. "
        "Parameters matched: geometric median ν=0.1 (ByzFL stops after T=3 Weiszfeld steps, "
        "fedmesh iterates to convergence), centered clipping τ=100 with one step from zero, "
        "norm bounding = ByzFL `Clipping(c=2)` then `Average`, bucketing_median = "
        "buckets of 2 then the coordinate-wise median. ByzFL's Krum scores with n−f−1 "
        "neighbours (the paper and fedmesh: n−f−2), so its output is not compared.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=25)
    parser.add_argument("--m", type=int, default=1_000_000)
    parser.add_argument("--f", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per measured call")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory-m", type=int, default=10_000_000)
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--rounds", type=int, default=2, help="turns taken by each side")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch/BLAS threads on both sides (1: steady on a shared machine)",
    )
    parser.add_argument(
        "--peer-worker", nargs=2, metavar=("NPY", "OUTPUTS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()

    if args.peer_worker:
        import torch

        torch.set_num_threads(args.threads)
        run_peers(args.peer_worker[0], args.f, args.repeat, args.budget, args.peer_worker[1])
        return

    import torch

    torch.set_num_threads(args.threads)
    updates = make_updates(args.n, args.m, args.f, seed=0)
    peers: dict[str, dict[str, Any]] = {}
    peer_outputs: dict[str, np.ndarray] = {}
    ours: dict[str, float] = {}
    floor = float("inf")
    our_outputs: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "updates.npy")
        outputs = os.path.join(scratch, "peers.npz")
        np.save(path, updates)
        if not args.skip_peers:
            ensure_peer_venv()
        # Peers and fedmesh take turns, and each keeps its best time over the rounds,
        # so a burst of load on a shared machine does not favour either side.
        for _ in range(args.rounds):
            if not args.skip_peers:
                report = json.loads(run_peer_worker(path, outputs, args).strip().splitlines()[-1])
                for rule, measured in report.items():
                    kept = peers.setdefault(rule, dict(measured))
                    for key in ("flower_ms", "byzfl_ms"):
                        if key in measured and measured[key] < kept[key]:
                            kept[key] = measured[key]
                            if key == "byzfl_ms":
                                kept["byzfl_input"] = measured["byzfl_input"]
                with np.load(outputs) as stored:
                    peer_outputs = {key: stored[key] for key in stored.files}
            timings, round_floor, our_outputs = run_fedmesh(
                updates, args.f, args.device, args.repeat, args.budget
            )
            floor = min(floor, round_floor)
            for rule, elapsed in timings.items():
                ours[rule] = min(ours.get(rule, float("inf")), elapsed)

    rules: dict[str, dict[str, Any]] = {}
    differences = compare(our_outputs, peer_outputs)
    for rule, elapsed in ours.items():
        row: dict[str, Any] = {"fedmesh_ms": round(elapsed, 2)}
        row.update(
            {k: round(v, 2) if isinstance(v, float) else v for k, v in peers.get(rule, {}).items()}
        )
        peer_times = [row[k] for k in ("flower_ms", "byzfl_ms") if k in row]
        if peer_times:
            row["speedup_vs_fastest_peer"] = round(min(peer_times) / elapsed, 2)
        if "flower_ms" in row:
            row["speedup_vs_flower"] = round(row["flower_ms"] / elapsed, 2)
        if rule in differences:
            row["max_abs_diff"] = differences[rule]
        rules[rule] = row

    summary: dict[str, Any] = {
        "bench": "aggregation",
        "device": args.device,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "threads": args.threads,
        "n": args.n,
        "m": args.m,
        "f": args.f,
        "repeat": args.repeat,
        "rounds": args.rounds,
        "floor_ms": round(floor, 2),
        "fedavg_vs_floor": round(ours["fedavg"] / floor, 2),
        "rules": rules,
        "memory_m": args.memory_m,
        "fedavg_streaming_peak_mib": {
            str(n): round(streaming_peak_mb(n, args.memory_m, args.threads), 1) for n in (10, 100)
        },
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    name = "aggregation.md"
    if args.device != "cpu":
        name = f"aggregation-{args.device.split(':')[0]}.md"
    elif args.threads != 1:
        name = f"aggregation-{args.threads}threads.md"
    (RESULTS / name).write_text(markdown(summary))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
