"""Parts (a) and (c) of :mod:`benchmarks.throughput`: the env against the leanest plain training loop
doing the same work (:class:`PlainLoop`), and the time of whole episodes per instance family."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks._throughput_common import VARIANTS, Args, _quartiles, _sync, _timed
from dus_gym.data import load_dataset
from dus_gym.envs import DUSEnv
from dus_gym.run import RunConfig, TrainingRun, resolve_device


def _standardised(x: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    ref = x[train]
    return (x - ref.mean(dim=0)) / ref.std(dim=0).clamp(min=1e-6)


class PlainLoop:
    """Plain joint training, independent of dus_gym's model, method and run code.

    One MLP per modality, ``Linear(D, hidden) - ReLU - Linear(hidden,
    feature_dim) - ReLU - Linear(feature_dim, C)``: the sizes of dus_gym's
    default encoder and head. Fused logits are the sum of the modalities'
    logits, the loss one ``F.cross_entropy``, the optimizer SGD with the
    config's learning rate, momentum and weight decay. Each iteration draws
    ``B`` training indices with replacement from a device generator and
    indexes the device tensors; each :meth:`step` is ``iterations`` iterations
    and one validation pass (fused accuracy and loss, on validation rows
    gathered once at construction) under ``torch.inference_mode``, read to the
    host in one transfer.

    With ``with_scores`` every iteration also computes, written plainly, what
    DUS needs: each modality's cross-entropy and score ``s_t`` (the mean
    probability of the true class) from one log-softmax of the stacked
    logits, and the running mean ``S_t`` of the scores. The step's
    validation read-out then also carries ``S_t`` and the step's mean
    per-modality loss.

    Args:
        dataset: a dataset name for :func:`~dus_gym.data.load_dataset`;
            every modality must be vectors ``(N, D)``.
        config: the learning settings (B, lr, momentum, weight decay,
            feature width, split fractions, device); default ``RunConfig()``.
        iterations: per step; None: one epoch, ``ceil(n_train / B)``.
        seed: split, initialisation and batch-draw seed.
        hidden: the MLPs' hidden width (dus_gym's ``MLPEncoder`` default).
        views: the modalities to use (default: the dataset's own).
    """

    def __init__(
        self,
        dataset: str,
        config: RunConfig | None = None,
        iterations: int | None = None,
        seed: int = 0,
        with_scores: bool = False,
        hidden: int = 128,
        views: Sequence[str] | None = None,
    ) -> None:
        config = config or RunConfig()
        self.with_scores = with_scores
        self.device = device = resolve_device(config.device)
        data = load_dataset(dataset, views)
        shapes = {name: tuple(x.shape[1:]) for name, x in data.modalities.items()}
        if any(len(s) != 1 for s in shapes.values()):
            raise ValueError(f"PlainLoop: {dataset!r} has modalities of shapes {shapes}; the plain loop takes vectors")
        splits = data.splits(seed, config.split_fractions)
        self.train_idx, self.val_idx = splits.train.to(device), splits.val.to(device)
        self.labels = data.labels.to(device)
        self.inputs = [_standardised(x, splits.train).to(device) for x in data.modalities.values()]
        # The validation rows, gathered once (a lean loop need not index them every epoch).
        self.val_inputs = [x[self.val_idx] for x in self.inputs]
        self.val_labels = self.labels[self.val_idx]
        with torch.random.fork_rng(devices=[]):  # default initialisation, global RNG left as it was
            torch.manual_seed(seed)
            self.nets = nn.ModuleList(
                nn.Sequential(
                    nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, config.feature_dim), nn.ReLU(),
                    nn.Linear(config.feature_dim, data.num_classes),
                )
                for x in self.inputs
            ).to(device)
        self.optimizer = torch.optim.SGD(
            self.nets.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.batch = config.base_batch
        self.iterations = iterations or max(1, -(-len(self.train_idx) // self.batch))
        m = len(self.inputs)
        self.scores = torch.zeros(m, device=device)
        """``S_t``, running mean of the scores (``with_scores``)"""
        self.t = 0
        """iterations whose scores ``S_t`` holds"""

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.nets.parameters())

    def step(self) -> np.ndarray:
        """One step: ``iterations`` training iterations, then the validation pass.

        Returns, on the host: fused validation accuracy and loss, and with
        scores ``S_t`` ``(M,)`` and the step's mean per-modality loss ``(M,)``.
        """
        nets, inputs, labels, train = self.nets, self.inputs, self.labels, self.train_idx
        n_train, batch, gen, device = len(train), self.batch, self.generator, self.device
        m = len(inputs)
        branch_loss_sum = torch.zeros(m, device=device)
        nets.train()
        for _ in range(self.iterations):
            idx = train[torch.randint(n_train, (batch,), generator=gen, device=device)]
            y = labels[idx]
            logits = [net(x[idx]) for net, x in zip(nets, inputs)]
            loss = F.cross_entropy(sum(logits[1:], logits[0]), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.with_scores:
                with torch.no_grad():
                    log_py = torch.stack(logits).log_softmax(-1).gather(2, y.expand(m, -1).unsqueeze(2))  # (M, B, 1)
                    branch_loss_sum -= log_py.mean(dim=(1, 2))
                    self.t += 1
                    self.scores += (log_py.exp().mean(dim=(1, 2)) - self.scores) / self.t
        nets.eval()
        with torch.inference_mode():
            y = self.val_labels
            fused = sum(net(x) for net, x in zip(nets, self.val_inputs))
            assert isinstance(fused, torch.Tensor)
            parts = [(fused.argmax(1) == y).float().mean().reshape(1), F.cross_entropy(fused, y).reshape(1)]
            if self.with_scores:
                parts += [self.scores, branch_loss_sum / self.iterations]
            return torch.cat(parts).cpu().numpy()



def _make_env(dataset: str, args: Args, method: str = "joint", n_steps: int | None = None) -> DUSEnv:
    return DUSEnv(
        dataset=dataset, method=method, n_steps=n_steps or args.n_steps, iterations_per_step=args.iterations_per_step,
        base_batch=args.base_batch, device=args.device,
    )


def episode(dataset: str, args: Args, n_steps: int, seed: int = 0) -> dict[str, Any]:
    """One full episode of the env under uniform sampling, each call timed (wall seconds)."""
    env = _make_env(dataset, args, n_steps=n_steps)
    device = resolve_device(args.device)
    action = env.rule.uniform_action
    start = time.perf_counter()
    env.reset(seed=seed)
    reset_s = time.perf_counter() - start
    times = []
    truncated = False
    while not truncated:
        start = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(action)
        _sync(device)
        times.append(time.perf_counter() - start)
        if terminated:
            raise RuntimeError(f"episode: {dataset} diverged under uniform sampling (seed {seed})")
    return {"reset_s": reset_s, "step_s": times, "iterations": env._iterations}



def overhead(args: Args, dataset: str) -> dict[str, Any]:
    """Part (a) for one dataset: the four :data:`VARIANTS` on the same work, in lockstep.

    Each repeat builds fresh objects (seed ``--seed + repeat``), steps each
    once untimed (warm-up: lazy allocations, the optimizer's momentum
    buffers), then ``n_steps`` times, all four per step, rotating which goes
    first so that a change of machine load hits all alike. Every step is
    timed in CPU seconds of this process (the work done, with one torch
    thread) and in wall seconds. The env's episode is two steps longer than
    the timed ones: its last step (test metrics, probes) is timed apart.
    """
    if args.n_steps < 1:
        raise ValueError(f"--n-steps must be >= 1, got {args.n_steps}")
    device = resolve_device(args.device)
    config = RunConfig(base_batch=args.base_batch, device=args.device)
    wall: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    per_repeat: list[dict[str, float]] = []  # median CPU seconds per step of each variant, per repeat
    resets, lasts = [], []
    checks: dict[str, Any] = {}
    for r in range(args.repeats):
        seed = args.seed + r
        env, steps, checks, reset_s = _variants(args, dataset, config, seed)
        resets.append(reset_s)
        for fn in steps.values():  # warm-up
            _timed(fn, device)
        rep_cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for k in range(args.n_steps):
            shift = (r * args.n_steps + k) % len(VARIANTS)
            for name in VARIANTS[shift:] + VARIANTS[:shift]:
                w, c = _timed(steps[name], device)
                wall[name].append(w)
                cpu[name].append(c)
                rep_cpu[name].append(c)
        per_repeat.append({name: statistics.median(v) for name, v in rep_cpu.items()})
        lasts.append(_timed(partial(env.step, env.rule.uniform_action), device))
    iterations = checks["iterations_by_variant"]["run"]
    examples = len(checks["counts"]["run"]) * args.base_batch * iterations
    return {
        "dataset": dataset,
        "modalities": env.modalities,
        **checks,
        "iterations_per_step": iterations,
        "examples_per_step": examples,
        **_overhead_times(wall, cpu, per_repeat, resets, lasts, examples),
    }


def _variants(
    args: Args, dataset: str, config: RunConfig, seed: int
) -> tuple[DUSEnv, dict[str, Callable[[], Any]], dict[str, Any], float]:
    """One repeat's four variants, built fresh and checked to do the same work: the env (reset, its reset
    time), the step of each variant, and the checks (iterations, parameters, counts) for the report."""
    env = _make_env(dataset, args, n_steps=args.n_steps + 2)
    action = env.rule.uniform_action
    start = time.perf_counter()
    env.reset(seed=seed)
    reset_s = time.perf_counter() - start
    assert env.run is not None
    run = TrainingRun(load_dataset(dataset), config, seed, seed, seed)
    counts = [args.base_batch] * run.num_modalities
    iterations = env._iterations
    plain = PlainLoop(dataset, config, iterations, seed)
    plain_scores = PlainLoop(dataset, config, iterations, seed, with_scores=True)
    checks = {
        "iterations_by_variant": {"plain": plain.iterations, "run": iterations, "env": env._iterations},
        "parameters": {"plain": plain.num_parameters, "run": sum(p.numel() for p in run.model.parameters()),
                       "env": sum(p.numel() for p in env.run.model.parameters())},
        "counts": {"env": env.rule.quantities(action).tolist(), "run": counts},
    }
    if len({*checks["iterations_by_variant"].values()}) != 1 or len({*checks["parameters"].values()}) != 1:
        raise RuntimeError(f"overhead: the variants do different work: {checks}")
    if checks["counts"]["env"] != counts:
        raise RuntimeError(f"overhead: the env's uniform counts {checks['counts']['env']} are not {counts}")
    steps: dict[str, Callable[[], Any]] = {
        "plain": plain.step, "plain_scores": plain_scores.step,
        "run": partial(run.step, counts, iterations), "env": partial(env.step, action),
    }
    return env, steps, checks, reset_s


def _overhead_times(
    wall: dict[str, list[float]], cpu: dict[str, list[float]], per_repeat: Sequence[dict[str, float]],
    resets: Sequence[float], lasts: Sequence[tuple[float, float]], examples: int,
) -> dict[str, Any]:
    """The medians, quartiles and ratios of part (a)'s timings."""
    med = {name: {"wall": statistics.median(wall[name]), "cpu": statistics.median(cpu[name])} for name in VARIANTS}

    def ratio(num: str, den: str) -> dict[str, Any]:
        by_repeat = [rep[num] / rep[den] for rep in per_repeat]
        return {
            "cpu": med[num]["cpu"] / med[den]["cpu"], "wall": med[num]["wall"] / med[den]["wall"],
            "cpu_by_repeat_min": min(by_repeat), "cpu_by_repeat_max": max(by_repeat),
        }

    return {
        "timed_steps_per_variant": len(cpu["env"]),
        "cpu_s_per_step": {name: med[name]["cpu"] for name in VARIANTS},
        "cpu_s_per_step_quartiles": {name: _quartiles(cpu[name]) for name in VARIANTS},
        "wall_s_per_step": {name: med[name]["wall"] for name in VARIANTS},
        "examples_per_cpu_s": {name: examples / med[name]["cpu"] for name in VARIANTS},
        "ratios": {
            "plain/env": ratio("plain", "env"),
            "plain_scores/env": ratio("plain_scores", "env"),
            "plain/run": ratio("plain", "run"),
            "plain_scores/run": ratio("plain_scores", "run"),
            "run/env": ratio("run", "env"),
            "plain/plain_scores": ratio("plain", "plain_scores"),
        },
        "reset_s": statistics.median(resets),
        "last_step_extra_cpu_s": statistics.median(c for _, c in lasts) - med["env"]["cpu"],
        "last_step_extra_wall_s": statistics.median(w for w, _ in lasts) - med["env"]["wall"],
    }


def episode_times(args: Args) -> list[dict[str, Any]]:
    """Part (c): wall and CPU time of one full episode (reset to test metrics) per family, uniform sampling."""
    rows = []
    for family in args.families:
        wall, cpu = time.perf_counter(), time.process_time()
        result = episode(family, args, args.episode_steps, seed=args.seed)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rows.append(
            {
                "family": family, "steps": args.episode_steps, "iterations_per_step": result["iterations"],
                "episode_s": wall, "episode_cpu_s": cpu, "reset_s": result["reset_s"],
                "last_step_s": result["step_s"][-1],
            }
        )
    return rows
