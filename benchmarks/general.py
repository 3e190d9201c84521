"""Judge a general sampler on held-out instances of every family (docs/agents.md).

Reads the ``results.jsonl`` of a ``benchmarks.compare`` run over ``family:NAME``
datasets and prints, per family, the fused test accuracy (IQM with a 95%
stratified-bootstrap interval) of the agent, uniform, DUS-H, the best fixed
ratio of each instance chosen in hindsight and the lookahead oracle; the
paired differences agent - uniform, agent - DUS-H and agent - max(uniform,
DUS-H) (mean over instances, 95% bootstrap interval); the difference agent -
DUS-H over all families (families as strata); and the verdict on each target:

- on every family, agent >= max(uniform, DUS-H) - 1 point on average;
- over all families, agent - DUS-H > 0 with the interval excluding 0;
- on complementary, agent >= uniform - 1 point.

It also plots, per family, the share of the examples the agent gives the
first modality over the epochs against DUS-H's (``counts.png``).

    python -m benchmarks.compare --datasets family:shortcut_a family:shortcut_b ... \\
        --policies pretrained:general_ppo uniform dus_h fixed:1,2 fixed:2,1 fixed:1,4 fixed:4,1 \\
        --num-seeds 10 --batched --output benchmarks/results/general
    python -m benchmarks.general benchmarks/results/general --agent general_ppo
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.compare import FAMILY_PREFIX, RESULTS_FILE, read_records
from benchmarks.stats import Interval, stratified_bootstrap_ci
from dus_gym.agent_io import policy_label
from dus_gym.cli import parse_args, run, setting_up

__all__ = ["Args", "judge", "main"]

PROG = "python -m benchmarks.general"
HINDSIGHT = "best fixed (hindsight)"


@dataclass
class Args:
    """Judge a general sampler on the held-out instances of every family."""

    output: str = "benchmarks/results/general"
    """folder of a benchmarks.compare run over family:NAME datasets (its results.jsonl); summary written there"""
    agent: str = "general_ppo"
    """the agent's policy label (a run folder's or shipped agent's name)"""
    reference: str = "dus_h"
    """the heuristic the agent must beat"""
    oracle: str = "oracle:4"
    """the lookahead oracle's policy spec, when the run has it"""
    plots: bool = True
    """write counts.png"""
    save: bool = True
    """write general.md and general.json into --output (--no-save --no-plots: only print, e.g. to compare
    another pair of policies without replacing the shipped agent's judgement)"""
    metric: str = "test"
    """test: final fused test accuracy (the judgement); val: final fused validation accuracy, for choosing
    among agents on validation instances (docs/agents.md), never for reporting"""


METRICS = ("test", "val")


def _by_family(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[int, dict[str, Any]]]]:
    """``family -> policy label -> seed -> record``."""
    out: dict[str, dict[str, dict[int, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    for r in records:
        if r["dataset"].startswith(FAMILY_PREFIX):
            out[r["dataset"][len(FAMILY_PREFIX) :]][policy_label(r["policy"])][int(r["seed"])] = r
    return out


def _accuracy(runs: dict[int, dict[str, Any]], seeds: list[int], metric: str = "test") -> np.ndarray:
    """Final fused accuracy of each seed's episode: held-out test (``"test"``) or validation (``"val"``)."""
    if metric == "val":
        return np.array([runs[s]["val_accuracy"][-1] for s in seeds], dtype=np.float64)
    return np.array([runs[s]["test"]["accuracy"] for s in seeds], dtype=np.float64)


def _mean_ci(values: np.ndarray) -> Interval:
    return stratified_bootstrap_ci([values], "mean")


def judge(
    records: list[dict[str, Any]], agent: str, reference: str = "dus_h", oracle: str = "oracle:4",
    metric: str = "test",
) -> dict[str, Any]:
    """Per-family and overall comparisons of ``agent`` (see the module docstring), JSON-ready; ``metric``
    picks the accuracy compared (:data:`METRICS`)."""
    if metric not in METRICS:
        raise ValueError(f"--metric {metric!r}: expected one of {list(METRICS)}")
    families = _by_family(records)
    if not families:
        raise ValueError("no family:NAME records; run benchmarks.compare with --datasets family:NAME ...")
    table: dict[str, Any] = {}
    diffs_ref, strata = [], []
    for family, policies in sorted(families.items()):
        needed = [agent, "uniform", reference]
        missing = [p for p in needed if p not in policies]
        if missing:
            raise ValueError(f"family {family!r}: no records of {missing}; policies there: {sorted(policies)}")
        seeds = sorted(set.intersection(*(set(policies[p]) for p in needed)))
        acc = {p: _accuracy(policies[p], seeds, metric) for p in needed}
        fixed = [p for p in policies if p.startswith("fixed:") or p == "uniform"]
        acc[HINDSIGHT] = np.max([_accuracy(policies[p], seeds, metric) for p in fixed], axis=0)
        if oracle in policies and set(seeds) <= set(policies[oracle]):
            acc[oracle] = _accuracy(policies[oracle], seeds, metric)
        best_rule = np.maximum(acc["uniform"], acc[reference])
        d_ref = acc[agent] - acc[reference]
        diffs_ref.append(float(d_ref.mean()))
        strata.append(d_ref)
        table[family] = {
            "n": len(seeds),
            "iqm": {p: stratified_bootstrap_ci([v], "iqm").__dict__ for p, v in acc.items()},
            "agent_minus_uniform": _mean_ci(acc[agent] - acc["uniform"]).__dict__,
            "agent_minus_reference": _mean_ci(d_ref).__dict__,
            "agent_minus_best_rule": _mean_ci(acc[agent] - best_rule).__dict__,
            "target_best_rule_minus_1pt": bool((acc[agent] - best_rule).mean() >= -0.01),
        }
        if family == "complementary":
            table[family]["target_uniform_minus_1pt"] = bool((acc[agent] - acc["uniform"]).mean() >= -0.01)
    overall = stratified_bootstrap_ci(strata, "mean")
    return {
        "agent": agent,
        "reference": reference,
        "metric": metric,
        "families": table,
        "overall_agent_minus_reference": overall.__dict__,
        "target_overall_positive": bool(overall.low > 0),
        "targets_met": bool(
            overall.low > 0
            and all(f["target_best_rule_minus_1pt"] for f in table.values())
            and all(f.get("target_uniform_minus_1pt", True) for f in table.values())
        ),
    }


def _fmt(i: dict[str, float], sign: bool = False) -> str:
    return Interval(i["estimate"], i["low"], i["high"]).format() if not sign else (
        f"{100 * i['estimate']:+.1f} [{100 * i['low']:+.1f}, {100 * i['high']:+.1f}]"
    )


def markdown(result: dict[str, Any]) -> str:
    """The judgement as markdown tables (accuracies and differences in percentage points)."""
    agent, ref = result["agent"], result["reference"]
    columns = [agent, "uniform", ref, HINDSIGHT]
    if any("oracle:4" in f["iqm"] for f in result["families"].values()):
        columns.append("oracle:4")
    lines = [
        "| family | n | " + " | ".join(columns) + f" | {agent} - uniform | {agent} - {ref} | "
        f"{agent} - max(uniform, {ref}) | target |",
        "|---|---|" + "---|" * (len(columns) + 4),
    ]
    for family, f in result["families"].items():
        cells = [_fmt(f["iqm"][c]) if c in f["iqm"] else "-" for c in columns]
        ok = f["target_best_rule_minus_1pt"] and f.get("target_uniform_minus_1pt", True)
        lines.append(
            f"| {family} | {f['n']} | " + " | ".join(cells)
            + f" | {_fmt(f['agent_minus_uniform'], True)} | {_fmt(f['agent_minus_reference'], True)}"
            + f" | {_fmt(f['agent_minus_best_rule'], True)} | {'met' if ok else 'missed'} |"
        )
    o = result["overall_agent_minus_reference"]
    lines += [
        "",
        f"Over all families (families as strata): {agent} - {ref} = {_fmt(o, True)} points "
        f"({'above 0' if o['low'] > 0 else 'below 0' if o['high'] < 0 else 'the interval includes 0'}). "
        f"All targets met: {'yes' if result['targets_met'] else 'no'}.",
    ]
    if result.get("metric") == "val":
        lines.insert(0, "Final fused **validation** accuracy (for choosing among agents; not a held-out result).\n")
    return "\n".join(lines) + "\n"


def plot_counts(records: list[dict[str, Any]], agent: str, reference: str, path: Path) -> Path:
    """Per family: the first modality's share of each iteration's examples over the epochs, agent vs reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = _by_family(records)
    n = len(families)
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, (family, policies) in zip(axes.flat, sorted(families.items())):
        for policy, style in ((agent, "-"), (reference, "--"), ("uniform", ":")):
            runs = policies.get(policy, {})
            if not runs:
                continue
            shares = np.array([[q[0] / sum(q) for q in r["quantities"]] for r in runs.values()])
            mean = shares.mean(axis=0)
            steps = np.arange(1, len(mean) + 1)
            ax.plot(steps, mean, style, label=policy)
            ax.fill_between(steps, shares.min(axis=0), shares.max(axis=0), alpha=0.15)
        names = next(iter(next(iter(policies.values())).values()))["modalities"]
        ax.set_title(family, fontsize=9)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"share of {names[0]}", fontsize=8)
        ax.set_xlabel("epoch", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(Args, argv, description=__doc__, prog=PROG)
    output = Path(args.output)
    path = output / RESULTS_FILE
    with setting_up():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no results; run benchmarks.compare with --output {output} first")
        records = read_records(path)
        result = judge(records, args.agent, args.reference, args.oracle, args.metric)
    text = markdown(result)
    if args.save:
        tmp = output / "general.md.tmp"
        tmp.write_text(text)
        tmp.replace(output / "general.md")
        tmp = output / "general.json.tmp"
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(output / "general.json")
    if args.plots:
        plot_counts(records, args.agent, args.reference, output / "counts.png")
    print(text)
    return result


if __name__ == "__main__":
    run(lambda: main(), PROG)
