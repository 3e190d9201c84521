"""Learning curves of ``agents/cem_residual.py`` runs, at equal env steps (docs/agents.md).

    python -m benchmarks.residual_curves --runs "runs/cem_residual/*" --output docs/cem_residual_curves.png

Per generation of every run folder (one per seed): the env steps spent so far
(gap rule and candidates, every family's training instances, steps per
episode) and the gain in final validation accuracy over the gap rule on the
same runs, mean over the candidates and of the best candidate; after the
search, the learned ``theta``'s gain on the unsearched validation instances
(with its 95% interval), when the run was validated. Prints the table and
writes the figure.
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dus_gym.cli import parse_args, run, setting_up

PROG = "python -m benchmarks.residual_curves"


@dataclass
class Args:
    """Plot the learning curves of agents/cem_residual.py runs (their history.json) at equal env steps."""

    runs: list[str] = field(default_factory=list)
    """GLOB entries: run folders (one per seed)"""
    output: str = "cem_residual_curves.png"
    """the figure to write"""


def main(argv: list[str] | None = None) -> str:
    args = parse_args(Args, argv, description=__doc__, prog=PROG)
    with setting_up():
        folders = sorted({str(Path(f).parent) for p in args.runs for f in glob.glob(str(Path(p) / "history.json"))})
        if not folders:
            raise ValueError(f"--runs: no run folder with a history.json matches {args.runs or '(none given)'}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["| run | env steps | mean gain over gap (val, points) | best candidate | learned theta on validation |",
             "|---|---|---|---|---|"]
    fig, ax = plt.subplots(figsize=(9, 4))
    for folder in folders:
        history = json.loads((Path(folder) / "history.json").read_text())
        config = json.loads((Path(folder) / "config.json").read_text())
        steps = np.array([h["env_steps"] for h in history])
        mean = np.array([100 * np.mean(h["gain_over_gap"]) for h in history])
        best = np.array([100 * np.max(h["gain_over_gap"]) for h in history])
        (line,) = ax.plot(steps, mean, marker="o", label=f"{folder}: mean of candidates")
        ax.plot(steps, best, ls="--", color=line.get_color(), label=f"{folder}: best candidate")
        validated = ""
        if "validation" in config:
            v = config["validation"]["val_gain_over_gap"]
            ax.errorbar([steps[-1]], [v["mean"]], yerr=[[v["mean"] - v["low"]], [v["high"] - v["mean"]]],
                        marker="*", ms=12, color=line.get_color(), label=f"{folder}: learned theta, validation")
            validated = f"{v['mean']:+.2f} [{v['low']:+.2f}, {v['high']:+.2f}]"
        for i, (s, m, b) in enumerate(zip(steps, mean, best)):
            lines.append(f"| {folder} | {s} | {m:+.2f} | {b:+.2f} | {validated if i == len(steps) - 1 else ''} |")
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xlabel("env steps")
    ax.set_ylabel("final validation accuracy - gap rule\n(points, same runs)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the curves, not on them
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    table = "\n".join(lines)
    print(table)
    print(f"written to {args.output}")
    return table


if __name__ == "__main__":
    run(main, PROG)
