"""What a training run of ``agents/train.py`` writes as it goes: the TensorBoard tags of every step's
``info`` and one ``episodes.csv`` row per finished episode (:class:`DUSInfoCallback`), and the learning
curve drawn from them (:func:`plot_learning_curve`)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

__all__ = ["DUSInfoCallback", "plot_learning_curve"]


class DUSInfoCallback(BaseCallback):
    """Logs the DUS ``info`` of every step under namespaced tags, and one CSV row per finished episode."""

    def __init__(
        self,
        modalities: Sequence[str],
        csv_path: Path,
        continue_from: Path | None = None,
        groups: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.continue_from = continue_from
        # Per-modality values are read by position: with --families the modality names differ
        # between families (a/b, pix/zer, ...); the labels are those of the first sub-env.
        self.modalities = list(modalities)
        self.groups = None if groups is None else list(groups)
        """the family of each sub-env (--families): a CSV column"""
        self.csv_path = csv_path
        self._quantities: dict[int, list[list[int]]] = {}
        self._file: Any = None
        self._writer: Any = None

    def _on_training_start(self) -> None:
        # A continued run starts its curve with the episodes of the run it continues.
        previous = self.continue_from.read_text() if self.continue_from and self.continue_from.is_file() else ""
        self._file = self.csv_path.open("w", newline="")
        self._writer = csv.writer(self._file)
        if previous:
            self._file.write(previous)
            return
        header = ["timesteps", "episode_return", "episode_length", "test_accuracy", "test_macro_f1"]
        header += [f"test_branch_accuracy_{m}" for m in self.modalities]
        header += [f"test_probe_accuracy_{m}" for m in self.modalities]
        header += [f"mean_quantity_{m}" for m in self.modalities]
        header += ["family"] if self.groups else []
        self._writer = csv.writer(self._file)
        self._writer.writerow(header)

    def _on_step(self) -> bool:
        for k, info in enumerate(self.locals["infos"]):
            q = info.get("quantities")
            if q is None:
                continue
            self._quantities.setdefault(k, []).append(list(q))
            for m, name in enumerate(self.modalities):
                self.logger.record_mean(f"dus/quantity/{name}", q[m])
                if "scores" in info:
                    self.logger.record_mean(f"dus/score/{name}", info["scores"][m])
                self.logger.record_mean(f"dus/val_branch_accuracy/{name}", info["val_branch_accuracy"][m])
            if "episode" in info:
                self._end_episode(k, info)
        return True

    def _end_episode(self, k: int, info: dict[str, Any]) -> None:
        ep = info["episode"]
        self.logger.record_mean("charts/episodic_return", ep["r"])
        self.logger.record_mean("charts/episodic_length", ep["l"])
        quantities = np.asarray(self._quantities.pop(k, []), dtype=np.float64)
        test = info.get("test")
        row: list[Any] = [self.num_timesteps, ep["r"], ep["l"]]
        if test is None:  # diverged: no test metrics
            row += [""] * (2 + 2 * len(self.modalities))
        else:
            for key in ("accuracy", "macro_f1", "loss", "imbalance_gap"):
                self.logger.record_mean(f"test/{key}", test[key])
            branch, probe = list(test["branch_accuracy"].values()), list(test["probe_accuracy"].values())
            for m, name in enumerate(self.modalities):
                self.logger.record_mean(f"test/branch_accuracy/{name}", branch[m])
                self.logger.record_mean(f"test/probe_accuracy/{name}", probe[m])
            row += [test["accuracy"], test["macro_f1"], *branch, *probe]
        row += list(quantities.mean(axis=0)) if len(quantities) else [""] * len(self.modalities)
        row += [self.groups[k]] if self.groups else []
        self._writer.writerow(row)
        self._file.flush()

    def _on_training_end(self) -> None:
        if self._file is not None:
            self._file.close()


def plot_learning_curve(run_dir: str | Path, window: int = 20) -> Path:
    """Draw ``learning_curve.png`` from ``episodes.csv`` (and ``eval/evaluations.npz`` when there).

    Left: episode return (dots) and its running mean over ``window`` episodes,
    with the held-out EvalCallback means. Right: the running mean of the final
    test accuracy of the training episodes, and of the share of examples given
    to each modality.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    with (run_dir / "episodes.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["test_accuracy"] != ""]
    if not rows:
        raise ValueError(f"{run_dir / 'episodes.csv'}: no finished episode to plot")
    steps = np.array([float(r["timesteps"]) for r in rows])

    def smooth(values: np.ndarray) -> np.ndarray:
        w = min(window, len(values))
        return np.convolve(values, np.ones(w) / w, mode="valid")

    ret = np.array([float(r["episode_return"]) for r in rows])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(steps, ret, ".", alpha=0.25, label="episode return")
    left.plot(steps[len(steps) - len(smooth(ret)) :], smooth(ret), label=f"running mean ({window} episodes)")
    evals = run_dir / "eval" / "evaluations.npz"
    if evals.is_file():
        data = np.load(evals)
        left.errorbar(data["timesteps"], data["results"].mean(axis=1), yerr=data["results"].std(axis=1), fmt="o-",
                      label="held-out (EvalCallback)")
    left.set_xlabel("timesteps")
    left.set_ylabel("return = val. accuracy gain")
    left.legend(fontsize=7)
    acc = np.array([float(r["test_accuracy"]) for r in rows])
    right.plot(steps[len(steps) - len(smooth(acc)) :], smooth(acc), label="test accuracy (fused)")
    quantity_cols = [k for k in rows[0] if k.startswith("mean_quantity_")]
    q = np.array([[float(r[k]) for k in quantity_cols] for r in rows])
    for j, k in enumerate(quantity_cols):
        share = q[:, j] / q.sum(axis=1)
        right.plot(steps[len(steps) - len(smooth(share)) :], smooth(share), "--",
                   label=f"share of examples: {k.removeprefix('mean_quantity_')}")
    right.set_xlabel("timesteps")
    right.set_ylim(0, 1)
    right.legend(fontsize=7)
    fig.suptitle(run_dir.name, fontsize=9)
    fig.tight_layout()
    out = run_dir / "learning_curve.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
