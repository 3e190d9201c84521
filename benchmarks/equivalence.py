"""Batched and single runs over whole episodes: do their test accuracies agree within the seed noise?

Runs the same grid twice with :mod:`benchmarks.compare`, the episodes one by
one and each grid point's seeds as one batched group (``--batched``), on the
same instances, and prints per grid point the mean test accuracy of each, the
paired difference (mean and 95% bootstrap interval over the seeds) and the
seeds' standard deviation. Stacked matmuls round differently from single ones,
so over a whole episode the two drift apart as any two float orders do; what
must hold is that the difference is small against the spread across seeds.

    python -m benchmarks.equivalence --datasets digits synthetic:shortcut --policies uniform dus_h --num-seeds 10
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import compare
from benchmarks.stats import stratified_bootstrap_ci
from dus_gym.cli import parse_args, run
from dus_gym.run import EPISODE_STEPS, RunConfig

__all__ = ["Args", "main"]

PROG = "python -m benchmarks.equivalence"


@dataclass
class Args:
    """Compare batched and single runs over whole episodes on the same instances."""

    datasets: list[str] = field(default_factory=lambda: ["digits", "synthetic:shortcut"])
    """datasets (as benchmarks.compare takes them)"""
    policies: list[str] = field(default_factory=lambda: ["uniform", "dus_h"])
    """policies (as benchmarks.compare takes them)"""
    num_seeds: int = 10
    """seeds (instances) per grid point"""
    n_steps: int = EPISODE_STEPS
    """steps per episode"""
    iterations_per_step: int | None = None
    """training iterations per step; none: one epoch"""
    base_batch: int = RunConfig.base_batch
    """B"""
    output: str = "benchmarks/results/equivalence"
    """folder: single/ and batched/ (compare's outputs) and equivalence.json"""


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(Args, argv, description=__doc__, prog=PROG)
    common = [
        "--datasets", *args.datasets, "--policies", *args.policies, "--methods", "joint",
        "--num-seeds", str(args.num_seeds), "--n-steps", str(args.n_steps), "--base-batch", str(args.base_batch),
        "--iterations-per-step", str(args.iterations_per_step).lower(), "--no-plots", "--no-progress",
    ]
    output = Path(args.output)
    records = {}
    for mode, extra in (("single", []), ("batched", ["--batched"])):
        compare.main([*common, *extra, "--output", str(output / mode)])
        records[mode] = {
            compare._record_key(r): r["test"]["accuracy"] for r in compare.read_records(output / mode / "results.jsonl")
        }
    rows = []
    cells = sorted({key[:3] for key in records["single"]})
    print("| dataset | policy | single | batched | batched - single [95% CI] | seed std |")
    print("|---|---|---|---|---|---|")
    for policy, dataset, method in cells:
        seeds = sorted(k[3] for k in records["single"] if k[:3] == (policy, dataset, method))
        single = np.array([records["single"][(policy, dataset, method, s)] for s in seeds])
        batched = np.array([records["batched"][(policy, dataset, method, s)] for s in seeds])
        diff = stratified_bootstrap_ci([batched - single], "mean")
        row: dict[str, Any] = {
            "dataset": dataset, "policy": policy, "method": method, "n": len(seeds),
            "single": float(single.mean()), "batched": float(batched.mean()), "difference": diff.__dict__,
            "seed_std": float(single.std(ddof=1)) if len(seeds) > 1 else 0.0,
        }
        rows.append(row)
        interval = f"{100 * diff.estimate:+.2f} [{100 * diff.low:+.2f}, {100 * diff.high:+.2f}]"
        print(
            f"| {dataset} | {policy} | {100 * row['single']:.1f} | {100 * row['batched']:.1f} | {interval} "
            f"| {100 * row['seed_std']:.1f} |"
        )
    (output / "equivalence.json").write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    run(lambda: main(), PROG)
