"""The demo's report: per-round JSON and a PNG plot of loss and held-out macro-F1."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class RoundRow:
    """One line of the per-round table."""

    round: int
    phase: str
    participants: int
    received: int
    mean_local_loss: float | None
    held_out_macro_f1: float | None
    held_out_pr_auc: float | None
    evaluated_by: int
    model_version: int | None
    seconds: float | None
    failure_reason: str


def write_report(rows: list[RoundRow], summary: dict[str, object], directory: Path) -> list[Path]:
    """Write rounds.json and rounds.png under ``directory``; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "rounds.json"
    json_path.write_text(
        json.dumps({"summary": summary, "rounds": [asdict(r) for r in rows]}, indent=2) + "\n"
    )
    figure, (loss_axis, f1_axis) = plt.subplots(1, 2, figsize=(10, 4))
    trained = [r for r in rows if r.mean_local_loss is not None]
    loss_axis.plot([r.round for r in trained], [r.mean_local_loss for r in trained], marker="o")
    loss_axis.set(title="Mean local training loss", xlabel="round", ylabel="BCE loss")
    evaluated = [r for r in rows if r.held_out_macro_f1 is not None]
    f1_axis.plot([r.round for r in evaluated], [r.held_out_macro_f1 for r in evaluated], marker="o")
    f1_axis.set(
        title="Held-out macro-F1 of each round's model", xlabel="round (0 = initial)", ylim=(0, 1)
    )
    for axis in (loss_axis, f1_axis):
        axis.grid(alpha=0.3)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    png_path = directory / "rounds.png"
    figure.savefig(png_path, dpi=120)
    plt.close(figure)
    return [json_path, png_path]
