"""Throughput of the environment: what the env and the run cost over plain training.

(a) **Overhead.** Four variants do the same work (the same data, the same
    model sizes, the same B, the same iterations per step, one validation
    pass per step, uniform counts), stepped in lockstep, with one torch thread:

    1. ``plain``: the leanest honest training loop, written here and
       independent of dus_gym's model, method and run code (two MLPs ending in
       linear heads, sum-of-logits fusion, one ``F.cross_entropy``, SGD with
       the run's momentum and weight decay, batches drawn with replacement by
       index from device tensors, no DataLoader, one validation pass under
       ``torch.inference_mode``);
    2. ``plain_scores``: the same loop plus what DUS computes every
       iteration, written plainly: each modality's cross-entropy and score
       ``s_t`` (mean true-class probability) and the running mean ``S_t``;
    3. ``run``: :meth:`TrainingRun.step <dus_gym.run.TrainingRun.step>`;
    4. ``env``: ``DUSEnv.step``.

    ``plain / env`` is the fraction of plain-training speed the env keeps;
    ``plain_scores / env`` the same with the score computation counted as the
    method's cost (target >= 0.95); ``plain / plain_scores`` is that cost.
    The episode's last step also computes the test metrics and the linear
    probes (work no plain loop does): it is timed apart.
(t) **Threads.** A default ``DUS-v0`` episode, and a few steps of the small CNN
    (``views=["pix_image", "zer"]``), with ``run_config={"threads": t}`` for t
    in 1, 2, None (torch's own setting) and with the env's default ``"auto"``,
    called from a process left at torch's default thread count, as a user's
    script is. ``--threads`` runs this part alone.
(b) **Scaling.** Env steps per second with 1, 2 and 4 envs in parallel
    (Stable-Baselines3's ``SubprocVecEnv``, one torch thread per env).
(r) **Batched runs.** Env steps per second (wall time) of N sub-envs of the
    batched vector env (``gym.make_vec(..., vectorization_mode="vector_entry_point")``,
    docs/batched.md) for N in ``--batched-envs``, side by side with one env
    (one thread) and SB3's ``SubprocVecEnv`` with ``--batched-workers``
    processes (one thread each), on the same work; the batched env with one
    thread (its default) and with torch's own count. On a GPU also the
    memory per run. On the CPU a second table gives the CPU time per run
    and iteration of N stacked runs (``BatchedTrainingRun`` itself) against
    a single run, per ``--stacking-datasets`` data set, and what
    ``make_run_batch`` picks there (stacked, or a loop where stacking costs more).
    A third table times whole episodes at ``--autoreset-envs`` sub-envs under
    each autoreset mode: transitions per second, counting only the steps of
    episodes (not the reset step of ``NEXT_STEP``, which trains nothing),
    best of ``--autoreset-repeats`` interleaved repeats.
    ``--batched`` runs this part alone; ``python -m benchmarks.throughput
    --batched --device cuda --batched-envs 1 16 64 256 1024`` is the GPU check.
(c) **Episodes.** Wall and CPU time of one full episode (reset, ``n_steps``
    steps, test and probes) per built-in instance family.

CPU time (of this process, all its threads) is the measure of work on a
machine shared with other jobs; wall time is listed beside it. Runs on the
GPU when there is one (``--device auto``). The default run takes about two
minutes on 2 CPU cores; ``--repeats``, ``--n-steps``, ``--threads-repeats``
and ``--threads-cnn-steps`` lengthen it.

    python -m benchmarks.throughput
    python -m benchmarks.throughput --skip threads scaling episodes --repeats 30
    python -m benchmarks.throughput --threads --threads-steps 30 --threads-cnn-steps 5 --threads-repeats 3
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import dus_gym  # noqa: F401  (registers DUS-v0)
from dus_gym.batched import batch_threads
from dus_gym.cli import parse_args, run, setting_up
from dus_gym.data import load_dataset
from dus_gym.envs import DUSEnv
from dus_gym.run import EPISODE_STEPS, RunConfig, TrainingRun, resolve_device, torch_threads

__all__ = [
    "Args", "PROG", "PlainLoop", "VARIANTS", "episode", "episode_times", "main", "overhead", "scaling", "threads",
]

PROG = "python -m benchmarks.throughput"

TORCH_DEFAULT_THREADS = torch.get_num_threads()
"""torch's own intra-op thread count in this process, read before the benchmark sets any."""
VARIANTS = ("plain", "plain_scores", "run", "env")
"""(a)'s variants, in the order of the report."""
THREAD_SETTINGS = ("auto", "1", "2", "none")
CNN_VIEWS = ("pix_image", "zer")


@dataclass
class Args:
    """Measure env throughput against a plain training loop, thread counts, parallel scaling and episode times."""

    datasets: list[str] = field(default_factory=lambda: ["digits"])
    """datasets of the overhead measurement (a), vector modalities only (the plain loop's encoders are MLPs);
    the first one is also the scaling measurement's (b)"""
    families: list[str] = field(
        default_factory=lambda: ["digits", "synthetic:shortcut", "synthetic:memorization", "synthetic:complementary"]
    )
    """instance families whose full-episode time (c) is measured"""
    n_steps: int = 10
    """timed steps of each variant per repeat in (a), after one warm-up step"""
    repeats: int = 10
    """repeats of (a), each with fresh objects and seed --seed + repeat; every step of a repeat runs the four
    variants one after the other, rotating which goes first"""
    episode_steps: int = EPISODE_STEPS
    """steps of the full episodes timed in (c)"""
    iterations_per_step: int | None = None
    """training iterations per step in (a), (b) and (c); none: one epoch"""
    base_batch: int = RunConfig.base_batch
    """B, examples per modality per iteration"""
    threads: bool = False
    """run only the thread-count comparison (t)"""
    thread_settings: list[str] = field(default_factory=lambda: list(THREAD_SETTINGS))
    """run_config threads values compared in (t): auto (the env default), an integer, none (torch's own setting)"""
    threads_steps: int = 10
    """steps of the DUS-v0 episode timed per thread setting in (t) (30: a whole default episode); 0 skips it"""
    threads_cnn_steps: int = 2
    """steps of the small-CNN episode (views pix_image zer) timed per thread setting in (t); 0 skips it"""
    threads_iterations: int | None = None
    """training iterations per step in (t); none: one epoch, as the default env"""
    threads_probe_steps: int | None = None
    """L-BFGS iterations of the linear probes of the episode's last step in (t); none: the default"""
    threads_repeats: int = 2
    """repeats of (t), rotating the order of the settings; the median counts"""
    threads_background: int = 0
    """busy processes (one Python loop each) kept running during (t), to measure under other work"""
    num_envs: list[int] = field(default_factory=lambda: [1, 2, 4])
    """numbers of parallel envs in (b)"""
    scaling_steps: int = 20
    """steps per env timed in (b), after one warm-up step"""
    device: str = "auto"
    """torch device: auto (CUDA when available), cpu, cuda"""
    torch_threads: int = 1
    """torch intra-op threads of this process in (a), (b) and (c), and of each parallel env"""
    seed: int = 0
    """seed of the instances (split, initialisation, batch order)"""
    output: str = "benchmarks/results/throughput"
    """folder of throughput.json and throughput.md"""
    skip: list[str] = field(default_factory=list)
    """parts to skip: overhead, threads, scaling, episodes, batched"""
    batched: bool = False
    """run only the batched-runs comparison (r)"""
    batched_envs: list[int] = field(default_factory=lambda: [1, 4, 16, 64])
    """numbers of sub-envs of the batched vector env in (r) (on a GPU: up to 1024)"""
    batched_steps: int = 6
    """steps (epochs) timed per measurement in (r), after one warm-up step"""
    batched_workers: int = 2
    """SB3 SubprocVecEnv workers measured beside the batched env in (r)"""
    stacking_datasets: list[str] = field(default_factory=lambda: ["digits", "avdigits"])
    """datasets of (r)'s second table: CPU time per run-iteration of N stacked runs against single runs"""
    autoreset_envs: int = 16
    """sub-envs of (r)'s third table: whole episodes under each autoreset mode"""
    autoreset_repeats: int = 3
    """interleaved repeats of each mode in (r)'s third table (the best counts)"""


PARTS = ("overhead", "threads", "scaling", "episodes", "batched")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


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


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return (values[0],) * 3
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


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
        env = _make_env(dataset, args, n_steps=args.n_steps + 2)
        action = env.rule.uniform_action
        start = time.perf_counter()
        env.reset(seed=seed)
        resets.append(time.perf_counter() - start)
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
        lasts.append(_timed(partial(env.step, action), device))
    examples = run.num_modalities * args.base_batch * iterations
    med = {name: {"wall": statistics.median(wall[name]), "cpu": statistics.median(cpu[name])} for name in VARIANTS}

    def ratio(num: str, den: str) -> dict[str, Any]:
        by_repeat = [rep[num] / rep[den] for rep in per_repeat]
        return {
            "cpu": med[num]["cpu"] / med[den]["cpu"], "wall": med[num]["wall"] / med[den]["wall"],
            "cpu_by_repeat_min": min(by_repeat), "cpu_by_repeat_max": max(by_repeat),
        }

    return {
        "dataset": dataset,
        "modalities": env.modalities,
        **checks,
        "iterations_per_step": iterations,
        "examples_per_step": examples,
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


def _thread_setting(text: str) -> int | str | None:
    if text == "auto":
        return "auto"
    if text.lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"--thread-settings {text!r}: expected auto, none or an integer >= 1")
    return value


@contextmanager
def _background(n: int) -> Iterator[None]:
    """``n`` busy processes (a Python loop each) for the duration of the block, ended by their handles."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


def _thread_episode(setting: str, views: Sequence[str] | None, n_steps: int, args: Args, seed: int) -> dict[str, Any]:
    """Reset and step one ``DUS-v0`` episode to its end (uniform sampling) under one threads setting."""
    value = _thread_setting(setting)
    run_config: dict[str, Any] = {} if value == "auto" else {"threads": value}
    if args.threads_probe_steps is not None:
        run_config["probe_steps"] = args.threads_probe_steps
    kwargs: dict[str, Any] = {"run_config": run_config} if run_config else {}
    if views is not None:
        kwargs["views"] = list(views)
    env = gym.make(
        "DUS-v0", n_steps=n_steps, iterations_per_step=args.threads_iterations, device=args.device, **kwargs
    )
    base = env.unwrapped
    assert isinstance(base, DUSEnv)
    action = base.rule.uniform_action
    device = resolve_device(args.device)
    wall, cpu = time.perf_counter(), time.process_time()
    env.reset(seed=seed)
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(action)
        done = terminated or truncated
    _sync(device)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert base.run is not None
    used = base.run.threads or torch.get_num_threads()
    env.close()
    return {"wall_s": wall, "cpu_s": cpu, "threads_used": used}


def threads(args: Args) -> list[dict[str, Any]]:
    """Part (t): episodes under each threads setting, called with torch's default thread count.

    For each model (the default MLPs, then the small CNN), every repeat runs
    one episode per setting, rotating their order; the table holds the
    medians and says whether the default ``"auto"`` is within 1.2x of the
    best setting, in CPU time and in wall time.
    """
    for s in args.thread_settings:
        _thread_setting(s)
    models = [("mlp", None, args.threads_steps), ("cnn", CNN_VIEWS, args.threads_cnn_steps)]
    before = torch.get_num_threads()
    torch.set_num_threads(TORCH_DEFAULT_THREADS)
    rows = []
    try:
        with _background(args.threads_background):
            for model, views, n_steps in models:
                if n_steps < 1:
                    continue
                _thread_episode("1", views, 1, args, args.seed)  # warm-up: data files, first-call costs
                runs: dict[str, list[dict[str, Any]]] = {s: [] for s in args.thread_settings}
                settings = list(args.thread_settings)
                for r in range(args.threads_repeats):
                    shift = r % len(settings)
                    for s in settings[shift:] + settings[:shift]:
                        runs[s].append(_thread_episode(s, views, n_steps, args, args.seed))
                table = {
                    s: {
                        "cpu_s": statistics.median(x["cpu_s"] for x in v),
                        "wall_s": statistics.median(x["wall_s"] for x in v),
                        "cpu_s_all": [x["cpu_s"] for x in v],
                        "wall_s_all": [x["wall_s"] for x in v],
                        "threads_used": v[0]["threads_used"],
                    }
                    for s, v in runs.items()
                }
                row: dict[str, Any] = {
                    "model": model, "views": list(views) if views else ["pix", "zer"], "steps": n_steps,
                    "caller_threads": TORCH_DEFAULT_THREADS, "settings": table,
                }
                counts = [s for s in table if s != "auto"]  # the explicit thread counts
                if "auto" in table and counts:
                    for measure in ("cpu_s", "wall_s"):
                        best = min(counts, key=lambda s: table[s][measure])
                        factor = table["auto"][measure] / table[best][measure]
                        row[f"auto_vs_best_{measure}"] = {"best": best, "factor": factor, "within_1.2x": factor <= 1.2}
                rows.append(row)
    finally:
        torch.set_num_threads(before)
    return rows


def _make_worker_env(dataset: str, args_dict: dict[str, Any], threads: int) -> DUSEnv:
    torch.set_num_threads(threads)
    return DUSEnv(dataset=dataset, **args_dict)


def scaling(args: Args, dataset: str) -> list[dict[str, Any]]:
    """Part (b): env steps per second with ``n`` envs stepping in parallel processes."""
    from stable_baselines3.common.vec_env import SubprocVecEnv

    kwargs = {
        "n_steps": args.scaling_steps + 2, "iterations_per_step": args.iterations_per_step,
        "base_batch": args.base_batch, "device": args.device,
    }
    rows = []
    for n in args.num_envs:
        venv = SubprocVecEnv([partial(_make_worker_env, dataset, kwargs, args.torch_threads) for _ in range(n)])
        try:
            venv.seed(args.seed)
            venv.reset()
            action = np.stack([venv.get_attr("rule", [i])[0].uniform_action for i in range(n)])
            venv.step(action)  # warm-up step, untimed
            start = time.perf_counter()
            for _ in range(args.scaling_steps):  # the episode's last step (test, probes) stays out
                venv.step(action)
            wall = time.perf_counter() - start
        finally:
            venv.close()
        rows.append({"num_envs": n, "env_steps_per_s": n * args.scaling_steps / wall})
    base = rows[0]["env_steps_per_s"] / rows[0]["num_envs"]
    for row in rows:
        row["speedup"] = row["env_steps_per_s"] / base
        row["efficiency"] = row["speedup"] / row["num_envs"]
    return rows


def _env_steps_per_s(step: Callable[[], Any], n: int, steps: int, device: torch.device) -> float:
    """``n`` env steps per call of ``step``: their rate over ``steps`` calls after one untimed warm-up call."""
    step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return n * steps / (time.perf_counter() - start)


def batched(args: Args, dataset: str) -> list[dict[str, Any]]:
    """Part (r): env steps per second of the batched vector env against one env and SubprocVecEnv."""
    from stable_baselines3.common.vec_env import SubprocVecEnv

    device = resolve_device(args.device)
    kwargs: dict[str, Any] = {
        "n_steps": args.batched_steps + 2, "iterations_per_step": args.iterations_per_step,
        "base_batch": args.base_batch, "device": args.device,
    }
    rows: list[dict[str, Any]] = []
    # On a GPU the reference is also one env on the CPU: the question is what the GPU buys.
    for where in ["cpu"] + ([args.device] if device.type != "cpu" else []):
        one = DUSEnv(dataset=dataset, **{**kwargs, "device": where})
        one.reset(seed=args.seed)
        uniform = one.rule.uniform_action
        with torch_threads(1):
            speed = _env_steps_per_s(partial(one.step, uniform), 1, args.batched_steps, resolve_device(where))
        rows.append({"mode": f"one env ({'1 thread' if where == 'cpu' else where})", "num_envs": 1,
                     "env_steps_per_s": speed})
    workers = args.batched_workers
    if workers > 1 and device.type == "cpu":
        venv = SubprocVecEnv([partial(_make_worker_env, dataset, kwargs, 1) for _ in range(workers)])
        try:
            venv.seed(args.seed)
            venv.reset()
            actions = np.stack([uniform] * workers)
            speed = _env_steps_per_s(lambda: venv.step(actions), workers, args.batched_steps, device)
        finally:
            venv.close()
        mode = f"SubprocVecEnv x{workers} (1 thread each)"
        rows.append({"mode": mode, "num_envs": workers, "env_steps_per_s": speed})
    for n in args.batched_envs:
        # On a GPU the CPU threads only launch kernels: measure the default alone (half the device time).
        for threads in sorted({1, TORCH_DEFAULT_THREADS}) if device.type == "cpu" else [batch_threads("auto", n) or 1]:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            vec = gym.make_vec(
                "DUS-v0", num_envs=n, vectorization_mode="vector_entry_point", dataset=dataset,
                **{**kwargs, "run_config": {"threads": threads}},
            )
            vec.reset(seed=args.seed)
            actions = np.stack([uniform] * n)
            speed = _env_steps_per_s(partial(vec.step, actions), n, args.batched_steps, device)
            auto = " = auto" if batch_threads("auto", n) == threads else ""
            row = {"mode": f"batched ({threads} thread{'s' if threads > 1 else ''}{auto})", "num_envs": n,
                   "env_steps_per_s": speed}
            if device.type == "cuda":
                row["memory_per_run_mb"] = torch.cuda.max_memory_allocated(device) / n / 2**20
            vec.close()
            rows.append(row)
    for row in rows:
        row["x_one_env"] = row["env_steps_per_s"] / rows[0]["env_steps_per_s"]
    return rows


def autoreset(args: Args, dataset: str) -> list[dict[str, Any]]:
    """Part (r), third table: transitions per second over whole episodes, SAME_STEP against NEXT_STEP.

    Each measurement times ``episodes`` episodes of ``steps`` steps after one
    untimed episode, with as many resets in the window for both modes (SAME_STEP
    resets within the last step of each; NEXT_STEP in one more call each).
    """
    from gymnasium.vector import AutoresetMode

    device = resolve_device(args.device)
    n, steps, episodes = args.autoreset_envs, 4, 3
    kwargs: dict[str, Any] = {
        "n_steps": steps, "iterations_per_step": args.iterations_per_step, "base_batch": args.base_batch,
        "device": args.device, "dataset": dataset,
    }
    modes = [AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP]
    best = dict.fromkeys(modes, float("inf"))
    for _ in range(args.autoreset_repeats):  # interleaved, so that the machine's load weighs on both alike
        for mode in modes:
            vec = gym.make_vec("DUS-v0", num_envs=n, vectorization_mode="vector_entry_point", autoreset_mode=mode,
                               **kwargs)
            vec.reset(seed=args.seed)
            actions = np.stack([vec.unwrapped.envs[0].rule.uniform_action] * n)  # type: ignore[attr-defined]
            calls = steps if mode == AutoresetMode.SAME_STEP else steps + 1  # per episode, its reset included
            for _ in range(calls):
                vec.step(actions)
            _sync(device)
            start = time.perf_counter()
            for _ in range(calls * episodes):
                vec.step(actions)
            _sync(device)
            best[mode] = min(best[mode], time.perf_counter() - start)
            vec.close()
    rate = {m: n * steps * episodes / t for m, t in best.items()}
    return [
        {"mode": m.value, "num_envs": n, "episode_steps": steps, "transitions_per_s": r,
         "x_same_step": r / rate[AutoresetMode.SAME_STEP]}
        for m, r in rate.items()
    ]


def stacking(args: Args) -> list[dict[str, Any]]:
    """Part (r), second table: CPU time per run-iteration of N stacked runs
    (:class:`~dus_gym.batched.BatchedTrainingRun` itself, whatever
    :func:`~dus_gym.batched.make_run_batch` would pick) against one single run, one thread."""
    from dus_gym.batched import BatchedTrainingRun, loop_reason

    config = RunConfig(base_batch=args.base_batch, device=args.device, threads=1)
    iterations = args.iterations_per_step or 10
    rows = []
    for name in args.stacking_datasets:
        data = load_dataset(name)
        m = data.num_modalities
        run = TrainingRun(data, config, args.seed, args.seed, args.seed)
        run.step(np.full(m, args.base_batch), 2)
        cpu = time.process_time()
        run.step(np.full(m, args.base_batch), iterations)
        single = (time.process_time() - cpu) / iterations
        for n in args.batched_envs:
            if n < 2:
                continue
            seeds = [dict.fromkeys(("split_seed", "init_seed", "sample_seed"), args.seed + i) for i in range(n)]
            batch = BatchedTrainingRun([data] * n, config, seeds)
            counts = np.full((n, m), args.base_batch)
            batch.step(counts, 2)
            cpu = time.process_time()
            batch.step(counts, iterations)
            stacked = (time.process_time() - cpu) / iterations / n
            rows.append({
                "dataset": name, "encoders": [type(e).__name__ for e in run.model.encoders], "num_runs": n,
                "single_ms": 1e3 * single, "stacked_ms": 1e3 * stacked, "ratio": stacked / single,
                "make_run_batch": "loop" if loop_reason(config, data, n) else "stacked",
            })
    return rows


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


def machine() -> dict[str, Any]:
    """Where the numbers come from."""
    info: dict[str, Any] = {
        "cpu_cores": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
        "torch_default_threads": TORCH_DEFAULT_THREADS, "gpu": None,
        "load_average_1min": os.getloadavg()[0],
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def to_markdown(result: dict[str, Any]) -> str:
    """The measurements as Markdown tables."""
    m = result["machine"]
    lines = [
        f"Machine: {m['cpu_cores']} CPU cores, GPU: {m['gpu'] or 'none'}, device {result['device']}, "
        f"torch {m['torch']} (default {m['torch_default_threads']} threads); load average (1 min) "
        f"{m['load_average_1min']:.2f} at the start, {result.get('load_average_end', float('nan')):.2f} at the end "
        f"(other processes share the CPUs: compare CPU times); {result['date']}.",
        "",
    ]
    for r in result.get("overhead", []):
        lines += [
            f"(a) Overhead on {r['dataset']} ({' + '.join(r['modalities'])}), uniform counts {r['counts']['run']}, "
            f"{r['iterations_per_step']} iterations and one validation pass per step, {r['parameters']['run']} "
            f"parameters, one torch thread; {r['timed_steps_per_variant']} timed steps per variant in lockstep. "
            "CPU ms per step: median [quartiles]:",
            "",
            "| variant | CPU ms/step | quartiles | wall ms/step | examples per CPU s |",
            "|---|---|---|---|---|",
        ]
        for name in VARIANTS:
            q1, _, q3 = r["cpu_s_per_step_quartiles"][name]
            lines.append(
                f"| {name} | {_ms(r['cpu_s_per_step'][name])} | {_ms(q1)}-{_ms(q3)} | "
                f"{_ms(r['wall_s_per_step'][name])} | {r['examples_per_cpu_s'][name]:.0f} |"
            )
        lines += [
            "",
            "| ratio (speed of the second as a fraction of the first's) | CPU | per-repeat range, CPU | wall |",
            "|---|---|---|---|",
        ]
        for key, v in r["ratios"].items():
            lines.append(
                f"| {key} | {v['cpu']:.3f} | {v['cpu_by_repeat_min']:.3f}-{v['cpu_by_repeat_max']:.3f} | "
                f"{v['wall']:.3f} |"
            )
        ratios = r["ratios"]
        lines += [
            "",
            f"(a)/(d) plain/env {ratios['plain/env']['cpu']:.3f}, (b)/(d) plain_scores/env "
            f"{ratios['plain_scores/env']['cpu']:.3f} (target >= 0.95), score cost (a)/(b) "
            f"{ratios['plain/plain_scores']['cpu']:.3f} (CPU time). Reset {r['reset_s']:.3f} s; the episode's "
            f"last step adds {r['last_step_extra_cpu_s']:.3f} CPU s (test metrics, probes).",
            "",
        ]
    if result.get("threads"):
        lines += [
            f"(t) Thread settings (`run_config={{\"threads\": t}}`), called from a process at torch's default "
            f"({m['torch_default_threads']} threads), {result['args']['threads_background']} extra busy "
            f"process(es); median of {result['args']['threads_repeats']} episode(s) per setting, order rotated:",
            "",
            "| model | steps | setting | threads used | CPU s | wall s | all CPU s |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in result["threads"]:
            for s, v in row["settings"].items():
                runs = ", ".join(f"{x:.2f}" for x in v["cpu_s_all"])
                lines.append(
                    f"| {row['model']} ({' + '.join(row['views'])}) | {row['steps']} | {s} | {v['threads_used']} | "
                    f"{v['cpu_s']:.2f} | {v['wall_s']:.2f} | {runs} |"
                )
        lines.append("")
        for row in result["threads"]:
            for measure, word in (("cpu_s", "CPU"), ("wall_s", "wall")):
                v = row.get(f"auto_vs_best_{measure}")
                if v:
                    same = row["settings"]["auto"]["threads_used"] == row["settings"][v["best"]]["threads_used"]
                    lines.append(
                        f"- {row['model']}, {word} time: the default 'auto' is x{v['factor']:.2f} of the best "
                        f"({v['best']}): {'within' if v['within_1.2x'] else 'NOT within'} 1.2x"
                        + (
                            f" (auto runs {row['settings']['auto']['threads_used']} thread(s), as the best does: "
                            "the difference is noise)."
                            if same
                            else "."
                        )
                    )
        lines.append("")
    if result.get("scaling"):
        lines += [
            f"(b) Parallel envs (SubprocVecEnv, {result['scaling_dataset']}, one torch thread each):",
            "",
            "| envs | env steps/s | speedup | efficiency |",
            "|---|---|---|---|",
        ]
        for r in result["scaling"]:
            lines.append(
                f"| {r['num_envs']} | {r['env_steps_per_s']:.2f} | {r['speedup']:.2f} | {r['efficiency']:.2f} |"
            )
        lines.append("")
    if result.get("batched"):
        gpu = any("memory_per_run_mb" in r for r in result["batched"])
        lines += [
            f"(r) Batched runs ({result['batched_dataset']}, one epoch per step, uniform counts; wall time):",
            "",
            "| mode | envs | env steps/s | x one CPU env |" + (" memory per run (MiB) |" if gpu else ""),
            "|---|---|---|---|" + ("---|" if gpu else ""),
        ]
        for r in result["batched"]:
            mem = f" {r['memory_per_run_mb']:.1f} |" if "memory_per_run_mb" in r else (" - |" if gpu else "")
            lines.append(
                f"| {r['mode']} | {r['num_envs']} | {r['env_steps_per_s']:.1f} | {r['x_one_env']:.2f} |" + mem
            )
        lines.append("")
    if result.get("autoreset"):
        first = result["autoreset"][0]
        lines += [
            f"(r) Whole episodes of {first['episode_steps']} steps at N = {first['num_envs']}, by autoreset mode "
            "(transitions per second, reset steps not counted; best of the repeats):",
            "",
            "| autoreset_mode | transitions/s | x SameStep |",
            "|---|---|---|",
        ]
        for r in result["autoreset"]:
            lines.append(f"| {r['mode']} | {r['transitions_per_s']:.1f} | {r['x_same_step']:.3f} |")
        lines.append("")
    if result.get("stacking"):
        lines += [
            "(r) Stacked against single runs (CPU ms per run and iteration, one thread, uniform counts):",
            "",
            "| dataset | encoders | N | single | stacked | stacked / single | make_run_batch |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in result["stacking"]:
            lines.append(
                f"| {r['dataset']} | {', '.join(r['encoders'])} | {r['num_runs']} | {r['single_ms']:.2f} | "
                f"{r['stacked_ms']:.2f} | {r['ratio']:.2f} | {r['make_run_batch']} |"
            )
        lines.append("")
    if result.get("episodes"):
        lines += [
            "(c) One full episode per instance family (uniform sampling, joint):",
            "",
            "| family | steps | iterations/step | episode, wall (s) | episode, CPU (s) | reset (s) "
            "| last step, with test and probes (s) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in result["episodes"]:
            lines.append(
                f"| {r['family']} | {r['steps']} | {r['iterations_per_step']} | {r['episode_s']:.2f} | "
                f"{r['episode_cpu_s']:.2f} | {r['reset_s']:.3f} | {r['last_step_s']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the parts asked for, write ``throughput.json`` and ``throughput.md`` to ``--output``, print the tables.

    Bad flags (an unknown part, thread setting or data set, a data set
    with non-vector modalities for (a)) raise :class:`dus_gym.cli.UsageError`
    before anything is measured.
    """
    args = parse_args(Args, argv, description=__doc__, prog=PROG)
    parts = ["threads"] if args.threads else ["batched"] if args.batched else [
        p for p in PARTS if p not in args.skip
    ]
    with setting_up():
        unknown = set(args.skip) - set(PARTS)
        if unknown:
            raise ValueError(f"--skip {sorted(unknown)}: expected any of {', '.join(PARTS)}")
        for s in args.thread_settings:
            _thread_setting(s)
        if "overhead" in parts:
            for d in args.datasets:
                shapes = {k: tuple(x.shape[1:]) for k, x in load_dataset(d).modalities.items()}
                if any(len(shape) != 1 for shape in shapes.values()):
                    raise ValueError(f"--datasets {d}: modalities of shapes {shapes}; (a)'s plain loop takes vectors")
    # Seeding: every run takes its split, initialisation and batch-order seeds from --seed.
    device = resolve_device(args.device)
    result: dict[str, Any] = {
        "args": asdict(args), "machine": machine(), "device": str(device), "parts": parts,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    before = torch.get_num_threads()
    torch.set_num_threads(args.torch_threads)
    try:
        if "overhead" in parts:
            result["overhead"] = [overhead(args, d) for d in args.datasets]
        if "threads" in parts:
            result["threads"] = threads(args)
        if "scaling" in parts:
            result["scaling_dataset"] = args.datasets[0]
            result["scaling"] = scaling(args, args.datasets[0])
        if "episodes" in parts:
            result["episodes"] = episode_times(args)
        if "batched" in parts:
            result["batched_dataset"] = args.datasets[0]
            result["batched"] = batched(args, args.datasets[0])
            result["autoreset"] = autoreset(args, args.datasets[0])
            if resolve_device(args.device).type == "cpu":
                result["stacking"] = stacking(args)
    finally:
        torch.set_num_threads(before)
    result["load_average_end"] = os.getloadavg()[0]
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = to_markdown(result)
    (output / "throughput.md").write_text(markdown)
    print(markdown)
    return result


if __name__ == "__main__":
    run(main, PROG)
