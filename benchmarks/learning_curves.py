"""Learning curves of several trainers side by side, at equal env steps.

    python -m benchmarks.learning_curves --runs "ppo_batched.py=runs/lc/*ppo_batched__1*" \\
        "SB3 PPO=runs/lc/sb3_seed1" --output docs/learning_curves_ppo_batched.png

Each ``--runs`` entry is ``LABEL=GLOB``: the run folders (one per seed) of one
trainer, each with the ``episodes.csv`` that ``agents/train.py`` and
``agents/ppo_batched.py`` write (``timesteps``, ``episode_return``,
``test_accuracy``: one row per finished episode). Episodes are binned by the
env step at which they ended (``--bin`` steps per bin); each bin shows the
mean over its episodes of all seeds. Prints the table it plots and writes the
figure (matplotlib).
"""

from __future__ import annotations

import csv
import glob
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dus_gym.cli import parse_args, run, setting_up

PROG = "python -m benchmarks.learning_curves"


@dataclass
class Args:
    """Plot the learning curves of several trainers (episodes.csv of their run folders) at equal env steps."""

    runs: list[str] = field(default_factory=list)
    """LABEL=GLOB entries: the run folders of one trainer (a folder per seed)"""
    bin: int = 1500
    """env steps per bin"""
    output: str = "learning_curves.png"
    """the figure to write"""


def read_episodes(folder: Path) -> np.ndarray:
    """``(episodes, 3)``: env steps at the episode's end, its return, its test accuracy (NaN if none)."""
    path = folder / "episodes.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no episodes.csv (expected a run folder of agents/train.py or ppo_batched.py)")
    with path.open(newline="") as f:
        rows = [(float(r["timesteps"]), float(r["episode_return"]), float(r["test_accuracy"] or "nan"))
                for r in csv.DictReader(f)]
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def binned(episodes: list[np.ndarray], width: int) -> list[tuple[int, int, float, float]]:
    """Rows ``(bin end, episodes, mean return, mean test accuracy)`` over all seeds' episodes."""
    both = np.concatenate(episodes)
    out = []
    for end in range(width, int(both[:, 0].max()) + width, width):
        inside = both[(both[:, 0] > end - width) & (both[:, 0] <= end)]
        if len(inside):
            out.append((end, len(inside), float(inside[:, 1].mean()), float(np.nanmean(inside[:, 2]))))
    return out


def main(args: Args) -> Path:
    with setting_up():
        curves: dict[str, list[tuple[int, int, float, float]]] = {}
        for entry in args.runs:
            label, sep, pattern = entry.partition("=")
            if not sep:
                raise ValueError(f"--runs {entry!r}: expected LABEL=GLOB")
            folders = sorted(Path(p) for p in glob.glob(pattern))
            if not folders:
                raise ValueError(f"--runs {entry!r}: no folder matches {pattern!r}")
            curves[f"{label} ({len(folders)} seed{'s' if len(folders) > 1 else ''})"] = binned(
                [read_episodes(f) for f in folders], args.bin
            )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, rows in curves.items():
        x = [r[0] for r in rows]
        axes[0].plot(x, [r[2] for r in rows], marker="o", label=label)
        axes[1].plot(x, [100 * r[3] for r in rows], marker="o", label=label)
        print(f"{label}:\n| env steps | episodes | mean return | mean test accuracy (%) |\n|---|---|---|---|")
        for end, count, ret, acc in rows:
            print(f"| {end} | {count} | {ret:.3f} | {100 * acc:.1f} |")
    axes[0].set(xlabel="env steps", ylabel="episode return (validation gain)", title="Training episodes")
    axes[1].set(xlabel="env steps", ylabel="test accuracy (%)", title="Their runs' test accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    run(lambda: main(parse_args(Args, prog=PROG)), PROG)
