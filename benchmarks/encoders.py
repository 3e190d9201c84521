"""Each default encoder trained alone on its own modality, against simple references.

    python -m benchmarks.encoders                # the table (about 10 minutes on 2 shared CPU cores)
    python -m benchmarks.encoders --seeds 5
    python -m benchmarks.encoders --diagnose     # why the earlier small CNN failed on spectrograms
    python -m benchmarks.encoders --speakers     # avdigits audio, each FSDD speaker held out in turn
    python -m benchmarks.encoders --only avmnist --seeds 10   # the rows whose name contains "avmnist"

Prints markdown tables (docs/benchmarks.md, "Encoders", keeps them): per
modality and model, training and test accuracy (%, mean +- std over seeds)
and seconds per epoch (one torch thread; wall time, so it depends on what
else the machine runs).

**How a model is trained alone.** Plain torch, not :class:`dus_gym.TrainingRun`:
a run needs two modalities, and starving one (counts ``[64, 1]``) does not
make it unimodal: under ``joint`` the starved modality still adds its branch
logits to the fused loss on its one example, and under ``mla`` it still takes
an optimizer step on the shared head every iteration. The recipe here is one
branch of the run's, with the run's defaults (:class:`dus_gym.RunConfig`):
inputs standardised with training-split statistics (per channel for images,
per feature for vectors and sequences, as the run does), the encoder from
:func:`dus_gym.models.encoders.make_encoder` and a linear head, initialised
by :func:`dus_gym.models.init_parameters`, SGD (lr 0.05, momentum 0.9, weight
decay 1e-4), B = 64 examples drawn with replacement per iteration,
``ceil(N_train / B)`` iterations per epoch, 30 epochs, mean cross-entropy;
the accuracy is that of the last epoch (no early stopping, as in the env).

**References**, on the same split and the same standardised input flattened:

- ``logreg``: multinomial logistic regression with an L2 penalty of 1e-3,
  full-batch L-BFGS, as the run's linear probe (docs/method.md section 8);
- ``mlp``: the default vector encoder (:class:`~dus_gym.models.MLPEncoder`,
  two layers) on the flattened input, trained with the recipe above.

The encoder passes when its mean test accuracy is at least the better
reference's; the table says so per row.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dus_gym.data import load_dataset
from dus_gym.data.avdigits import avdigits_speakers
from dus_gym.models import MLPEncoder, init_parameters, make_encoder
from dus_gym.run import EPISODE_STEPS, RunConfig

EPOCHS = EPISODE_STEPS
"""Epochs of training alone: as many as a default episode has steps (one epoch each)."""


@dataclass
class Task:
    """One modality of one data set, with its split (0 train, 1 val, 2 test)."""

    name: str
    x: torch.Tensor
    y: torch.Tensor
    split: torch.Tensor


def standardise(x: torch.Tensor, train: torch.Tensor, per: str = "run") -> torch.Tensor:
    """The run's standardisation (per channel for images, per feature otherwise), or ``per="feature"``
    (every input value on its own), or ``"none"``."""
    if per == "none":
        return x
    ref = x[train]
    dims = [0] if per == "feature" else ([0, 2, 3] if x.ndim == 4 else list(range(x.ndim - 1)))
    return (x - ref.mean(dim=dims, keepdim=True)) / ref.std(dim=dims, keepdim=True).clamp(min=1e-6)


def tasks() -> list[Task]:
    av = load_dataset("avdigits")
    avm = load_dataset("avmnist")
    digits = load_dataset("digits", ["pix_image", "zer"])
    d_split = torch.zeros(len(digits), dtype=torch.long)
    sp = digits.splits(0)  # the run's split of split_seed 0: stratified 60/20/20
    d_split[sp.val], d_split[sp.test] = 1, 2
    assert av.split is not None and avm.split is not None
    audio = av.modalities["audio"]
    return [
        Task("avdigits audio (1, 40, 32)", audio, av.labels, av.split),
        # The converter's --audio-layout sequence: time first, (T, F).
        Task("avdigits audio as a sequence (32, 40)", audio[:, 0].transpose(1, 2).contiguous(), av.labels, av.split),
        Task("avdigits image (1, 8, 8)", av.modalities["image"], av.labels, av.split),
        Task("digits pix_image (1, 16, 15)", digits.modalities["pix_image"], digits.labels, d_split),
        Task("digits zer (47,)", digits.modalities["zer"], digits.labels, d_split),
        Task("avmnist audio (1, 40, 32)", avm.modalities["audio"], avm.labels, avm.split),
        Task("avmnist image (4,) PCA coefficients", avm.modalities["image"], avm.labels, avm.split),
    ]


class Flat(nn.Module):
    """A module applied to the flattened input."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.flatten(1))


def train_alone(
    encoder: nn.Module, task: Task, seed: int, lr: float | None = None, momentum: float | None = None,
    per: str = "run", init: Callable[[nn.Module, torch.Generator], None] = init_parameters,
) -> dict[str, float]:
    """Train ``encoder`` + a linear head on ``task`` alone (the module docstring's recipe)."""
    cfg = RunConfig()
    train, test = (torch.nonzero(task.split == k).flatten() for k in (0, 2))
    x = standardise(task.x, train, per)
    model = nn.Sequential(encoder, nn.Linear(cfg.feature_dim, int(task.y.max()) + 1))
    init(model, torch.Generator().manual_seed(seed))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr if lr is None else lr,
                          momentum=cfg.momentum if momentum is None else momentum, weight_decay=cfg.weight_decay)
    draws = torch.Generator().manual_seed(10_000 + seed)
    iterations = math.ceil(len(train) / cfg.base_batch)
    start = time.perf_counter()
    model.train()
    for _ in range(EPOCHS):
        for _ in range(iterations):
            idx = train[torch.randint(len(train), (cfg.base_batch,), generator=draws)]
            loss = nn.functional.cross_entropy(model(x[idx]), task.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    seconds = (time.perf_counter() - start) / EPOCHS
    model.eval()
    with torch.inference_mode():
        def acc(rows: torch.Tensor) -> float:
            return 100 * float((model(x[rows]).argmax(1) == task.y[rows]).float().mean())
        return {"train": acc(train), "test": acc(test), "s_per_epoch": seconds, "finite": float(math.isfinite(loss))}


def logreg(task: Task, l2: float = 1e-3, steps: int = 200) -> dict[str, float]:
    """Multinomial logistic regression on the standardised, flattened input (full-batch L-BFGS)."""
    train, test = (torch.nonzero(task.split == k).flatten() for k in (0, 2))
    f = standardise(task.x, train).flatten(1)
    classes = int(task.y.max()) + 1
    w = torch.zeros(f.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(f[train] @ w + b, task.y[train]) + l2 * w.square().sum()
        loss.backward()
        return loss

    start = time.perf_counter()
    opt.step(closure)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        def acc(rows: torch.Tensor) -> float:
            return 100 * float(((f[rows] @ w + b).argmax(1) == task.y[rows]).float().mean())
        return {"train": acc(train), "test": acc(test), "s_per_epoch": seconds, "finite": 1.0}


def _fmt(values: list[float]) -> str:
    a = np.asarray(values)
    return f"{a.mean():.1f} +- {a.std():.1f}" if len(a) > 1 else f"{a.mean():.1f}"


def _row(label: str, model: str, runs: list[dict[str, float]], verdict: str = "") -> str:
    return (f"| {label} | {model} | {_fmt([r['train'] for r in runs])} | {_fmt([r['test'] for r in runs])} | "
            f"{np.mean([r['s_per_epoch'] for r in runs]):.3f} | {verdict} |")


HEADER = "| modality | model | train % | test % | s / epoch | |\n|---|---|---|---|---|---|"


def table(seeds: int, with_resnet: bool, only: str = "") -> None:
    print(f"Each default encoder alone, {EPOCHS} epochs, {seeds} seeds (mean +- std); "
          "logreg: one fit (deterministic), its s / epoch is the whole fit\n")
    print(HEADER)
    for task in tasks():
        if only not in task.name:
            continue
        shape = tuple(task.x.shape[1:])
        default = make_encoder(shape)
        kind = type(default).__name__
        runs = [train_alone(make_encoder(shape), task, s) for s in range(seeds)]
        refs = {"logreg": [logreg(task)]}
        if len(shape) > 1:
            refs["mlp (flattened)"] = [train_alone(Flat(MLPEncoder(int(np.prod(shape)))), task, s)
                                       for s in range(seeds)]
        best = max(float(np.mean([r["test"] for r in v])) for v in refs.values())
        mine = float(np.mean([r["test"] for r in runs]))
        verdict = f"{'>=' if mine >= best else '<'} best reference ({best:.1f})"
        print(_row(task.name, f"default: {kind}", runs, verdict), flush=True)
        for name, v in refs.items():
            print(_row(task.name, name, v), flush=True)
        if with_resnet and len(shape) == 3:
            print(_row(task.name, "resnet18", [train_alone(make_encoder(shape, kind="resnet18"), task, s)
                                               for s in range(seeds)]), flush=True)


class LegacyConvEncoder(nn.Module):
    """The small CNN before the fix (global average pooling after three layers), with switches."""

    def __init__(self, in_channels: int, width: int = 32, norm: bool = True, pool: str = "gap") -> None:
        super().__init__()

        def n(c: int) -> nn.Module:
            return nn.GroupNorm(8, c) if norm else nn.Identity()

        grid = {"gap": 1, "grid-avg": 4, "grid-max": 4}[pool]
        pooling = nn.AdaptiveMaxPool2d(grid) if pool == "grid-max" else nn.AdaptiveAvgPool2d(grid)
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), n(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), n(2 * width), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), n(2 * width), nn.ReLU(),
            pooling, nn.Flatten(), nn.Linear(2 * width * grid * grid, 64), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def he_init(module: nn.Module, generator: torch.Generator) -> None:
    """Kaiming-normal (ReLU gain) weights and zero biases, instead of PyTorch's default uniform."""
    init_parameters(module, generator)
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def diagnose(seeds: int) -> None:
    """The earlier CNN on avdigits' audio, one suspect changed at a time, then the pooling."""
    task = tasks()[0]
    variants: list[tuple[str, Callable[[], nn.Module], dict]] = [
        ("earlier CNN (GAP), run defaults", lambda: LegacyConvEncoder(1), {}),
        ("  without GroupNorm", lambda: LegacyConvEncoder(1, norm=False), {}),
        ("  lr 0.01", lambda: LegacyConvEncoder(1), {"lr": 0.01}),
        ("  momentum 0", lambda: LegacyConvEncoder(1), {"momentum": 0.0}),
        ("  He (Kaiming-normal) init", lambda: LegacyConvEncoder(1), {"init": he_init}),
        ("  no standardisation", lambda: LegacyConvEncoder(1), {"per": "none"}),
        ("  standardised per input value", lambda: LegacyConvEncoder(1), {"per": "feature"}),
        ("  pooled to 4x4, average", lambda: LegacyConvEncoder(1, pool="grid-avg"), {}),
        ("  pooled to 4x4, max", lambda: LegacyConvEncoder(1, pool="grid-max"), {}),
        ("the new default (max 4x4, stride-2 stem, width 16)", lambda: make_encoder((1, 40, 32)), {}),
    ]
    print(f"avdigits audio (1, 40, 32) alone, {EPOCHS} epochs, {seeds} seeds (mean +- std)\n")
    print(HEADER)
    for label, build, kwargs in variants:
        print(_row(task.name, label, [train_alone(build(), task, s, **kwargs) for s in range(seeds)]), flush=True)


def speakers(seeds: int) -> None:
    """avdigits audio with each FSDD speaker held out in turn (trained on all pairs of the other five),
    as a ``(1, 40, 32)`` image (the default CNN) and as a ``(32, 40)`` sequence (the default GRU)."""
    image, sequence = tasks()[:2]
    who = avdigits_speakers()
    print(f"avdigits audio, test = one speaker, train = all pairs of the other five; {seeds} seeds\n")
    print("| held-out speaker | test pairs | logreg (image) | mlp (flattened) | default CNN | logreg (sequence) "
          "| default GRU |\n|---|---|---|---|---|---|---|")
    rows: dict[str, list[float]] = {k: [] for k in ("logreg", "mlp", "cnn", "logreg_seq", "gru")}
    for s in sorted(set(who)):
        split = torch.from_numpy(np.where(who == s, 2, 0))
        img, seq = (Task(t.name, t.x, t.y, split) for t in (image, sequence))
        got = {
            "logreg": [logreg(img)["test"]],
            "mlp": [train_alone(Flat(MLPEncoder(40 * 32)), img, k)["test"] for k in range(seeds)],
            "cnn": [train_alone(make_encoder((1, 40, 32)), img, k)["test"] for k in range(seeds)],
            "logreg_seq": [logreg(seq)["test"]],
            "gru": [train_alone(make_encoder((32, 40)), seq, k)["test"] for k in range(seeds)],
        }
        for k, v in got.items():
            rows[k].append(float(np.mean(v)))
        print(f"| {s} | {int((who == s).sum())} | " + " | ".join(_fmt(v) for v in got.values()) + " |", flush=True)
    print("| mean | | " + " | ".join(f"{np.mean(v):.1f}" for v in rows.values()) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.encoders", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per trained model (default: 3)")
    parser.add_argument("--resnet18", action="store_true", help="also ResNet-18 on image-shaped modalities (slow)")
    parser.add_argument("--diagnose", action="store_true", help="the earlier CNN's failure, one suspect at a time")
    parser.add_argument("--speakers", action="store_true", help="avdigits audio, each speaker held out in turn")
    parser.add_argument("--only", default="", help="the table's rows whose modality name contains this text")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: expected at least 1")
    torch.set_num_threads(1)
    if args.diagnose:
        diagnose(args.seeds)
    elif args.speakers:
        speakers(args.seeds)
    else:
        table(args.seeds, args.resnet18, args.only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
