"""Plots of benchmark results (PNG, matplotlib's Agg backend; no display needed).

- ``final_metrics.png``: per (dataset, method), each policy's fused test
  accuracy (IQM, 95% bootstrap interval) and its branch accuracies (means,
  intervals);
- ``val_curves.png``: fused validation accuracy over the steps of an
  episode, mean over seeds with a band of +-1 standard error;
- ``quantities.png``: each modality's examples per iteration over the
  episode, mean over seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.summary import Row
from dus_gym.agent_io import policy_label

__all__ = ["plot_all", "plot_final_metrics", "plot_quantities", "plot_val_curves"]

_MARKERS = ("s", "^", "v", "D", "P", "X")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panels(
    keys: Sequence[tuple[str, str]], ncols: int = 1, width: float = 6.0, height: float = 3.2
) -> tuple[Any, Any]:
    plt = _pyplot()
    fig, axes = plt.subplots(
        len(keys), ncols, figsize=(width * ncols, height * len(keys)), squeeze=False, constrained_layout=True
    )
    return fig, axes


def _label(policy: str) -> str:
    return policy_label(policy)


def _groups(records: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[str, list[dict[str, Any]]]]:
    """``{(dataset, method): {policy: [records]}}`` in first-seen order."""
    out: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for r in records:
        out.setdefault((r["dataset"], r["method"]), {}).setdefault(r["policy"], []).append(r)
    return out


def plot_final_metrics(rows: Sequence[Row], path: str | Path) -> Path:
    """Fused accuracy IQM and branch-accuracy means, with 95% intervals, one panel per (dataset, method)."""
    keys = list(dict.fromkeys((r.dataset, r.method) for r in rows))
    fig, axes = _panels(keys, height=0.45 * max(len({r.policy for r in rows}), 4) + 1.0)
    for ax, (dataset, method) in zip(axes[:, 0], keys):
        panel = [r for r in rows if (r.dataset, r.method) == (dataset, method)]
        ys = np.arange(len(panel))
        series: list[tuple[str, list[Any], str, float]] = [("fused (IQM)", [r.accuracy for r in panel], "o", 0.0)]
        modalities = list(panel[0].branch)
        for k, m in enumerate(modalities):
            offset = 0.25 * (k + 1) / len(modalities)
            series.append((f"branch {m} (mean)", [r.branch.get(m) for r in panel], _MARKERS[k % 6], offset))
        for name, intervals, marker, offset in series:
            est = np.array([iv.estimate if iv else np.nan for iv in intervals]) * 100
            low = np.array([iv.low if iv else np.nan for iv in intervals]) * 100
            high = np.array([iv.high if iv else np.nan for iv in intervals]) * 100
            err = np.vstack([np.nan_to_num(est - low), np.nan_to_num(high - est)])
            ax.errorbar(est, ys + offset, xerr=err, fmt=marker, capsize=3, label=name, ms=5 if offset else 7)
        ax.set_yticks(ys, [_label(r.policy) for r in panel])
        ax.invert_yaxis()
        ax.set_xlabel("test accuracy (%), 95% bootstrap interval")
        ax.set_title(f"{dataset}, {method}")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.savefig(path, dpi=80)
    _pyplot().close(fig)
    return Path(path)


def plot_val_curves(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Fused validation accuracy per step (mean +- 1 standard error over seeds), one panel per (dataset, method)."""
    groups = _groups(records)
    fig, axes = _panels(list(groups))
    for ax, ((dataset, method), policies) in zip(axes[:, 0], groups.items()):
        for policy, runs in policies.items():
            length = min(len(r["val_accuracy"]) for r in runs)
            curves = np.array([r["val_accuracy"][:length] for r in runs]) * 100
            mean = curves.mean(axis=0)
            se = curves.std(axis=0, ddof=1) / np.sqrt(len(runs)) if len(runs) > 1 else np.zeros_like(mean)
            steps = np.arange(length)
            ax.plot(steps, mean, label=_label(policy))
            ax.fill_between(steps, mean - se, mean + se, alpha=0.2)
        ax.set_xlabel("step (epoch)")
        ax.set_ylabel("val. accuracy (%)")
        ax.set_title(f"{dataset}, {method}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.savefig(path, dpi=80)
    _pyplot().close(fig)
    return Path(path)


def plot_quantities(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Each modality's quantity n_j per step (mean over seeds): a column per modality."""
    groups = _groups(records)
    ncols = max(len(r["modalities"]) for r in records)
    fig, axes = _panels(list(groups), ncols=ncols, width=4.5)
    for row_axes, ((dataset, method), policies) in zip(axes, groups.items()):
        for policy, runs in policies.items():
            length = min(len(r["quantities"]) for r in runs)
            q = np.array([r["quantities"][:length] for r in runs], dtype=np.float64)  # (seeds, steps, M)
            for j, ax in enumerate(row_axes[: q.shape[2]]):
                ax.plot(np.arange(1, length + 1), q[:, :, j].mean(axis=0), label=_label(policy))
        for j, ax in enumerate(row_axes):
            names = next(iter(policies.values()))[0]["modalities"]
            ax.set_title(f"{dataset}, {method}: n[{names[j] if j < len(names) else j}]")
            ax.set_xlabel("step (epoch)")
            ax.set_ylabel("examples per iteration")
            ax.grid(alpha=0.3)
        row_axes[0].legend(fontsize=7, ncol=2)
    fig.savefig(path, dpi=80)
    _pyplot().close(fig)
    return Path(path)


def plot_all(records: Sequence[dict[str, Any]], rows: Sequence[Row], output: str | Path) -> list[Path]:
    """The three plots into ``output``."""
    output = Path(output)
    return [
        plot_final_metrics(rows, output / "final_metrics.png"),
        plot_val_curves(records, output / "val_curves.png"),
        plot_quantities(records, output / "quantities.png"),
    ]
