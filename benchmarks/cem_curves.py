"""Learning curves of ``agents/cem_schedule.py`` runs, at equal env steps (docs/agents.md).

    python -m benchmarks.cem_curves --runs "runs/cem/shortcut_switch-*" "runs/cem/memorization_switch-*" \\
        --output docs/cem_schedule_curves.png

Each ``--runs`` entry is a glob of run folders (one per seed) of one family,
each with its ``schedule.json``. Per generation: the env steps spent so far
(candidates x training instances x steps per episode) and the final
validation accuracy on the training instances, mean over the candidates and
of the best candidate. Prints the table and writes one panel per entry.
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dus_gym.cli import parse_args, run, setting_up

PROG = "python -m benchmarks.cem_curves"


@dataclass
class Args:
    """Plot the learning curves of agents/cem_schedule.py runs (their schedule.json) at equal env steps."""

    runs: list[str] = field(default_factory=list)
    """GLOB entries, one per family: the run folders of its seeds"""
    output: str = "cem_schedule_curves.png"
    """the figure to write"""
    ceiling: str = ""
    """a benchmarks.ceiling output folder searched on the same held-out instances: also print, per run,
    the learned schedule against the rules and the ceiling on the same runs (paired)"""


def curve(run: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Env steps at the end of each generation, and the mean and best candidate's validation accuracy (%)."""
    a = run["args"]
    per_generation = a["population"] * a["instances"] * a["n_steps"]
    steps = per_generation * np.arange(1, len(run["history"]) + 1)
    mean = np.array([100 * np.mean(h["val"]) for h in run["history"]])
    best = np.array([100 * np.max(h["val"]) for h in run["history"]])
    return steps, mean, best


def against_ceiling(run: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """The learned schedule's held-out test accuracy paired with the ceiling search's records of the same
    instances (instance k from seed k in both): means (%), schedule - best rule and schedule - gap with
    95% bootstrap intervals, and the share of the room (ceiling - best rule) it takes."""
    from benchmarks.ceiling import summarise
    from benchmarks.stats import stratified_bootstrap_ci

    family = run["args"]["family"]
    by_index = {int(r["index"]): r for r in records if r["family"] == family}
    k = [i for i in range(len(run["held_out"])) if i in by_index]
    if not k:
        raise ValueError(f"the ceiling records hold no instance of {family!r}")
    (row,) = summarise([by_index[i] for i in k])
    mine = 100 * np.array([run["held_out"][i]["test"] for i in k])
    out: dict[str, Any] = {"family": family, "instances": len(k), "schedule": float(mine.mean()),
                           "best_rule": row["best_rule"], "ceiling": row["ceiling"]}
    for name, spec in (("minus_best_rule", row["best_rule"]), ("minus_gap", "gap")):
        other = 100 * np.array([by_index[i]["rules"][spec]["test"] for i in k])
        iv = stratified_bootstrap_ci([mine - other], "mean")
        out[name] = {"mean": iv.estimate, "low": iv.low, "high": iv.high}
    room = row["ceiling_minus_best_rule"]["mean"]
    out["share_of_room"] = out["minus_best_rule"]["mean"] / room if room > 0 else float("nan")
    return out


def _interval(x: dict[str, float]) -> str:
    return f"{x['mean']:+.1f} [{x['low']:+.1f}, {x['high']:+.1f}]"


def main(argv: list[str] | None = None) -> str:
    args = parse_args(Args, argv, description=__doc__, prog=PROG)
    with setting_up():
        groups = {pattern: sorted(glob.glob(str(Path(pattern) / "schedule.json"))) for pattern in args.runs}
        empty = [p for p, files in groups.items() if not files]
        if not args.runs or empty:
            raise ValueError(f"--runs: no run folder with a schedule.json matches {empty or '(none given)'}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["| runs | seed | env steps | mean val % | best val % | held-out test % |", "|---|---|---|---|---|---|"]
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.6), squeeze=False)
    for ax, (pattern, files) in zip(axes[0], groups.items()):
        for file in files:
            r = json.loads(Path(file).read_text())
            steps, mean, best = curve(r)
            test = 100 * np.mean([h["test"] for h in r["held_out"]])
            seed = r["args"]["seed"]
            (line,) = ax.plot(steps, mean, marker="o", label=f"seed {seed}: mean of candidates")
            ax.plot(steps, best, ls="--", color=line.get_color(), label=f"seed {seed}: best candidate")
            ax.scatter([steps[-1]], [test], marker="*", s=120, color=line.get_color(),
                       label=f"seed {seed}: learned schedule, held-out test")
            for s, m, b in zip(steps, mean, best):
                held = f"{test:.1f}" if s == steps[-1] else ""
                lines.append(f"| {pattern} | {seed} | {s} | {m:.1f} | {b:.1f} | {held} |")
        ax.set_title(pattern, fontsize=9)
        ax.set_xlabel("env steps")
        ax.set_ylabel("final fused accuracy (%)\nlines: validation, training instances", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    if args.ceiling:
        from benchmarks.ceiling import RESULTS_FILE
        from benchmarks.results_file import read_records

        records = read_records(Path(args.ceiling) / RESULTS_FILE)
        lines += ["", "| family | seed | n | schedule % | best rule | - best rule [95% CI] | - gap [95% CI] | "
                  "ceiling % | share of the room |", "|---|---|---|---|---|---|---|---|---|"]
        for files in groups.values():
            for file in files:
                r = json.loads(Path(file).read_text())
                c = against_ceiling(r, records)
                b, g = (_interval(c[name]) for name in ("minus_best_rule", "minus_gap"))
                lines.append(
                    f"| {c['family']} | {r['args']['seed']} | {c['instances']} | {c['schedule']:.1f} | "
                    f"{c['best_rule']} | {b} | {g} | {c['ceiling']:.1f} | {100 * c['share_of_room']:.0f}% |"
                )
    table = "\n".join(lines)
    print(table)
    print(f"written to {args.output}")
    return table


if __name__ == "__main__":
    run(main, PROG)
