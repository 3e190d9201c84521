"""The summary of a comparison's results: one :class:`Row` per grid point (IQM and bootstrap
intervals over seeds, the gain over ``uniform``), the gains over datasets, and ``summary.md`` /
``summary.csv`` (:mod:`benchmarks.compare` runs the grid; :mod:`benchmarks.plots` draws the rows)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.stats import Interval
from dus_gym.agent_io import policy_label

# benchmarks.stats loads scipy only in the functions that need it (imported there), so worker processes
# that only run cells start faster.

__all__ = [
    "REFERENCE_POLICY",
    "Row",
    "aggregate_gains",
    "aggregate_table",
    "compact_table",
    "markdown_table",
    "summarise",
    "write_summary",
]

REFERENCE_POLICY = "uniform"
"""The policy every other is compared with (gain, probability of improvement)."""


@dataclass
class Row:
    """Summary of one grid point over its seeds."""

    dataset: str
    method: str
    policy: str
    n: int
    diverged: int
    accuracy_mean: float
    accuracy: Interval
    """IQM of fused test accuracy and its 95% bootstrap interval"""
    macro_f1_mean: float
    branch: dict[str, Interval]
    """mean branch accuracy per modality, with its interval"""
    probe: dict[str, Interval]
    """mean linear-probe accuracy per modality, with its interval"""
    improvement: Interval
    """probability that a run of this policy beats a run of uniform (fused test accuracy)"""
    gain_mean: float
    """mean fused-accuracy gain over uniform, paired by seed (NaN without uniform)"""


def summarise(records: Sequence[dict[str, Any]], n_resamples: int = 2000, seed: int = 0) -> list[Row]:
    """One :class:`Row` per (dataset, method, policy), in the records' first-seen order."""
    from benchmarks.stats import probability_of_improvement, stratified_bootstrap_ci

    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["method"], r["policy"]), []).append(r)
    rows = []
    for (dataset, method, policy), runs in groups.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        acc = np.array([r["test"]["accuracy"] for r in runs])
        ci = {"n_resamples": n_resamples, "seed": seed}
        modalities = runs[0]["modalities"]
        branch = {
            m: stratified_bootstrap_ci([[r["test"]["branch_accuracy"][m] for r in runs]], "mean", **ci)
            for m in modalities
        }
        probe = {
            m: stratified_bootstrap_ci([[r["test"]["probe_accuracy"][m] for r in runs]], "mean", **ci)
            for m in modalities
        }
        reference = {r["seed"]: r["test"]["accuracy"] for r in groups.get((dataset, method, REFERENCE_POLICY), [])}
        if reference:
            ref = np.array(list(reference.values()))
            improvement = probability_of_improvement(acc, ref, **ci)
            paired = [r["test"]["accuracy"] - reference[r["seed"]] for r in runs if r["seed"] in reference]
            gain = float(np.mean(paired)) if paired else float("nan")
        else:
            improvement, gain = Interval(float("nan"), float("nan"), float("nan")), float("nan")
        rows.append(
            Row(
                dataset, method, policy, len(runs), sum(bool(r["diverged"]) for r in runs),
                float(acc.mean()), stratified_bootstrap_ci([acc], "iqm", **ci),
                float(np.mean([r["test"]["macro_f1"] for r in runs])), branch, probe, improvement, gain,
            )
        )
    return rows


def compact_table(rows: Sequence[Row]) -> str:
    """Fused test accuracy (IQM [95% CI], percent) as a policy x (dataset, method) Markdown table."""
    columns = list(dict.fromkeys((r.dataset, r.method) for r in rows))
    policies = list(dict.fromkeys(r.policy for r in rows))
    cell = {(r.policy, r.dataset, r.method): r for r in rows}
    lines = [
        "| policy | " + " | ".join(f"{d} {m}" for d, m in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for policy in policies:
        values = []
        for d, m in columns:
            row = cell.get((policy, d, m))
            values.append("-" if row is None else row.accuracy.format())
        lines.append(f"| {policy_label(policy)} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def aggregate_gains(
    records: Sequence[dict[str, Any]], n_resamples: int = 2000, seed: int = 0
) -> list[tuple[str, str, list[str], Interval]]:
    """Per (method, policy): the IQM over all datasets of the per-seed fused-accuracy gain over
    ``uniform`` (paired by seed), with a 95% stratified-bootstrap interval, each dataset a stratum.

    Returns ``(method, policy, datasets, interval)`` rows; policies without a
    uniform reference on some dataset are left out of that dataset.
    """
    from benchmarks.stats import stratified_bootstrap_ci

    reference = {
        (r["dataset"], r["method"], r["seed"]): r["test"]["accuracy"]
        for r in records
        if r["policy"] == REFERENCE_POLICY
    }
    strata: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r in records:
        ref = reference.get((r["dataset"], r["method"], r["seed"]))
        if ref is not None and r["policy"] != REFERENCE_POLICY:
            gains = strata.setdefault((r["method"], r["policy"]), {}).setdefault(r["dataset"], [])
            gains.append(r["test"]["accuracy"] - ref)
    return [
        (method, policy, list(by_dataset),
         stratified_bootstrap_ci(list(by_dataset.values()), "iqm", n_resamples=n_resamples, seed=seed))
        for (method, policy), by_dataset in strata.items()
    ]


def aggregate_table(aggregates: Sequence[tuple[str, str, list[str], Interval]]) -> str:
    """The aggregate gains as a Markdown table (points of accuracy)."""
    lines = ["| method | policy | datasets | gain vs uniform, IQM [95% stratified CI] |", "|---|---|---|---|"]
    for method, policy, datasets, iv in aggregates:
        gain = iv.format(1) if np.isfinite(iv.estimate) else "-"
        lines.append(f"| {method} | {policy_label(policy)} | {len(datasets)} | {gain} |")
    return "\n".join(lines) + "\n"


def _csv_rows(rows: Sequence[Row]) -> tuple[list[str], list[list[Any]]]:
    modalities = sorted({m for row in rows for m in row.branch})
    header = [
        "dataset", "method", "policy", "n", "diverged", "accuracy_mean", "accuracy_iqm", "accuracy_iqm_low",
        "accuracy_iqm_high", "macro_f1_mean", "gain_over_uniform_mean", "p_improvement", "p_improvement_low",
        "p_improvement_high",
    ]
    for kind in ("branch", "probe"):
        for m in modalities:
            header += [f"{kind}_{m}_mean", f"{kind}_{m}_low", f"{kind}_{m}_high"]
    table = []
    for row in rows:
        line: list[Any] = [
            row.dataset, row.method, row.policy, row.n, row.diverged, row.accuracy_mean, row.accuracy.estimate,
            row.accuracy.low, row.accuracy.high, row.macro_f1_mean, row.gain_mean, row.improvement.estimate,
            row.improvement.low, row.improvement.high,
        ]
        for values in (row.branch, row.probe):
            for m in modalities:
                iv = values.get(m, Interval(float("nan"), float("nan"), float("nan")))
                line += [iv.estimate, iv.low, iv.high]
        table.append(line)
    return header, table


def markdown_table(rows: Sequence[Row]) -> str:
    """The summary as a Markdown table (accuracies in percent)."""
    lines = [
        "| dataset | method | policy | n | fused acc. mean | fused acc. IQM [95% CI] | gain vs uniform "
        "| P(improve) [95% CI] | branch acc. mean [95% CI] | probe acc. mean [95% CI] |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        branch = "<br>".join(f"{m}: {iv.format()}" for m, iv in row.branch.items())
        probe = "<br>".join(f"{m}: {iv.format()}" for m, iv in row.probe.items())
        poi = "-" if not np.isfinite(row.improvement.estimate) else row.improvement.format(2, 1.0)
        gain = "-" if not np.isfinite(row.gain_mean) else f"{100 * row.gain_mean:+.1f}"
        n = f"{row.n}" + (f" ({row.diverged} diverged)" if row.diverged else "")
        lines.append(
            f"| {row.dataset} | {row.method} | {policy_label(row.policy)} | {n} | {100 * row.accuracy_mean:.1f} "
            f"| {row.accuracy.format()} | {gain} | {poi} | {branch} | {probe} |"
        )
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_summary(
    rows: Sequence[Row],
    output: str | Path,
    note: str = "",
    aggregates: Sequence[tuple[str, str, list[str], Interval]] = (),
) -> tuple[Path, Path]:
    """Write ``summary.md`` and ``summary.csv`` into ``output`` (each replaced atomically)."""
    import csv
    import io

    output = Path(output)
    header, table = _csv_rows(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows([[f"{v:.6g}" if isinstance(v, float) else v for v in line] for line in table])
    md = (
        "# Benchmark summary\n\n"
        + (note + "\n\n" if note else "")
        + "Fused test accuracy in percent, interquartile mean (IQM) over seeds with a 95% percentile-bootstrap "
        "interval:\n\n"
        + compact_table(rows)
        + "\n## Every cell\n\n"
        "Fused accuracy mean and IQM [95% CI]; gain vs uniform is the mean paired difference (same seeds); "
        "P(improve) is the probability that a run of the policy beats a run of uniform; branch and probe "
        "accuracies are means with 95% bootstrap intervals.\n\n"
        + markdown_table(rows)
    )
    if aggregates:
        md += (
            "\n## Over datasets\n\nPer-seed gain of fused test accuracy over uniform (points), IQM over all "
            "seeds of all datasets, with a 95% stratified-bootstrap interval (each dataset a stratum).\n\n"
            + aggregate_table(aggregates)
        )
    md_path, csv_path = output / "summary.md", output / "summary.csv"
    _write_atomic(md_path, md)
    _write_atomic(csv_path, buffer.getvalue())
    return md_path, csv_path


