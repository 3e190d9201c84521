"""Throughput of the environment: what the env and the run cost over plain training.

(a) **Overhead.** Env steps per second and training examples per second of
    ``DUSEnv`` under uniform sampling, against a hand-written loop that builds
    the same model and optimizer and does the same iterations and validation
    passes with no env and no run object around it. The ratio env / loop is
    the fraction of plain-training speed the env keeps (target >= 0.95).
    The last step of an episode also computes the test metrics and the linear
    probes (work the plain loop does not do): it is timed separately.
(b) **Scaling.** Env steps per second with 1, 2 and 4 envs in parallel
    (Stable-Baselines3's ``SubprocVecEnv``, one torch thread per env).
(c) **Episodes.** Wall time of one full episode (reset, ``n_steps`` steps,
    test and probes) per built-in instance family.

Runs on the GPU when there is one (``--device auto``).

    python benchmarks/throughput.py
    python benchmarks/throughput.py --device cuda --encoders cnn mlp --datasets synthetic:shortcut
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from dus_gym.cli import parse_args
from dus_gym.data import load_dataset
from dus_gym.envs import DUSEnv
from dus_gym.models import build_model
from dus_gym.run import RunConfig, resolve_device

__all__ = ["Args", "HandWrittenLoop", "episode", "episode_times", "main", "overhead", "scaling"]


@dataclass
class Args:
    """Measure env throughput against a hand-written training loop, parallel scaling and episode times."""

    datasets: list[str] = field(default_factory=lambda: ["digits", "synthetic:shortcut"])
    """datasets of the overhead measurement (a), and of the scaling measurement (b: the first one)"""
    families: list[str] = field(
        default_factory=lambda: ["digits", "synthetic:shortcut", "synthetic:memorization", "synthetic:complementary"]
    )
    """instance families whose full-episode wall time (c) is measured"""
    n_steps: int = 10
    """steps (epochs) per measured episode in (a) and (b); (c) uses --episode-steps"""
    episode_steps: int = 30
    """steps of the full episodes timed in (c)"""
    iterations_per_step: int | None = None
    """training iterations per step; none: one epoch"""
    base_batch: int = 64
    """B, examples per modality per iteration"""
    repeats: int = 3
    """repetitions of (a), alternating env and loop; the median step time counts"""
    num_envs: list[int] = field(default_factory=lambda: [1, 2, 4])
    """numbers of parallel envs in (b)"""
    scaling_steps: int = 30
    """steps per env timed in (b), after one warm-up step"""
    device: str = "auto"
    """torch device: auto (CUDA when available), cpu, cuda"""
    encoders: list[str] | None = None
    """per-modality encoder kind (mlp, cnn, gru); none: chosen by the sample shape"""
    torch_threads: int = 1
    """torch intra-op threads of this process and of each parallel env"""
    seed: int = 0
    """seed of the instances (split, initialisation, batch order)"""
    output: str = "benchmarks/results/throughput"
    """folder of throughput.json and throughput.md"""
    skip: list[str] = field(default_factory=list)
    """parts to skip: overhead, scaling, episodes"""


def _config(args: Args) -> RunConfig:
    return RunConfig(
        base_batch=args.base_batch, device=args.device, encoders=None if args.encoders is None else tuple(args.encoders)
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class HandWrittenLoop:
    """Plain joint training with uniform batches: the same model, optimizer,
    iterations and per-step validation pass as the env, written out by hand
    (no env, no :class:`~dus_gym.run.TrainingRun`, no monitor).

    :meth:`step` trains ``iterations`` iterations and evaluates the
    validation split, ending with one host transfer as the env does. With
    ``with_scores`` it also computes, per iteration, what any DUS loop needs:
    each modality's cross-entropy and mean true-class probability (``s_t``),
    kept as a running mean (``S_t``), by hand.
    """

    def __init__(
        self, dataset: str, config: RunConfig, iterations: int | None, seed: int = 0, with_scores: bool = False
    ) -> None:
        self.with_scores = with_scores
        self.device = device = resolve_device(config.device)
        data = load_dataset(dataset, seed=seed)
        splits = data.splits(seed, config.split_fractions).to(device)
        self.train_idx, self.val_idx = splits.train, splits.val
        self.labels = data.labels.to(device)
        self.inputs = []
        for x in data.modalities.values():
            x = x.to(device)
            ref = x[self.train_idx]
            dims = [0, 2, 3] if x.ndim == 4 else list(range(x.ndim - 1))
            self.inputs.append((x - ref.mean(dim=dims, keepdim=True)) / ref.std(dim=dims, keepdim=True).clamp(min=1e-6))
        self.model = build_model(
            [tuple(x.shape[1:]) for x in self.inputs], data.num_classes, torch.Generator().manual_seed(seed), device,
            config.feature_dim, False, config.encoders,
        )
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.batch = config.base_batch
        self.iterations = iterations or max(1, -(-len(self.train_idx) // self.batch))
        self.scores = torch.zeros(len(self.inputs), device=device)
        self.t = 0

    def step(self) -> torch.Tensor:
        """One step (epoch): training iterations, then the validation metrics on the host."""
        model, inputs, labels, train = self.model, self.inputs, self.labels, self.train_idx
        model.train()
        for _ in range(self.iterations):
            idx = train[torch.randint(len(train), (self.batch,), generator=self.generator, device=self.device)]
            y = labels[idx]
            branch_logits = [model.branch_logits(j, x[idx]) for j, x in enumerate(inputs)]
            loss = F.cross_entropy(sum(branch_logits[1:], branch_logits[0]), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.with_scores:
                with torch.no_grad():
                    stacked = torch.stack(branch_logits).detach()  # (M, B, C)
                    branch_loss = torch.stack([F.cross_entropy(lg, y) for lg in stacked])
                    score = stacked.softmax(-1).gather(2, y.expand(len(stacked), -1)[..., None]).mean((1, 2))
                    self.t += 1
                    self.scores = self.scores + (score - self.scores) / self.t
                    self.branch_loss = branch_loss
            self.optimizer.step()
        model.eval()
        y_val = labels[self.val_idx]
        with torch.inference_mode():
            branch = torch.stack([model.branch_logits(j, x[self.val_idx]) for j, x in enumerate(inputs)])
            fused = branch.sum(0)
            return torch.cat(
                [
                    (fused.argmax(1) == y_val).float().mean().reshape(1),
                    F.cross_entropy(fused, y_val).reshape(1),
                    (branch.argmax(2) == y_val).float().mean(1),
                ]
            ).cpu()


def _timed(fn: Any, device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def _make_env(dataset: str, args: Args, method: str = "joint", n_steps: int | None = None) -> DUSEnv:
    return DUSEnv(
        dataset=dataset, method=method, n_steps=n_steps or args.n_steps, iterations_per_step=args.iterations_per_step,
        base_batch=args.base_batch, device=args.device, run_config={"encoders": _config(args).encoders},
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
    """Part (a) for one dataset: env steps against hand-written-loop steps, in lockstep.

    Both advance one step at a time, alternating which goes first, so a change
    of machine load hits both alike. Each step is timed in wall seconds and in
    CPU seconds of this process (robust to other processes on a shared
    machine; equal to the work done with one torch thread on the CPU). The
    episode's last step, which adds the test metrics and linear probes, is
    not among the ``n_steps - 1`` compared steps.
    """
    if args.n_steps < 2:
        raise ValueError(f"--n-steps must be >= 2 (the last step is timed apart), got {args.n_steps}")
    device = resolve_device(args.device)
    config = _config(args)
    names = ("env", "loop", "loop_scores")
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    resets, lasts = [], []
    for r in range(args.repeats):
        seed = args.seed + r
        env = _make_env(dataset, args)
        action = env.rule.uniform_action
        start = time.perf_counter()
        env.reset(seed=seed)
        resets.append(time.perf_counter() - start)
        loop = HandWrittenLoop(dataset, config, args.iterations_per_step, seed)
        loop_scores = HandWrittenLoop(dataset, config, args.iterations_per_step, seed, with_scores=True)
        if loop.iterations != env._iterations:
            raise RuntimeError(f"iterations differ: env {env._iterations}, loop {loop.iterations}")
        steps = {"env": partial(env.step, action), "loop": loop.step, "loop_scores": loop_scores.step}
        for k in range(args.n_steps - 1):
            for name in names[k % 3 :] + names[: k % 3]:  # rotate which goes first
                w, c = _timed(steps[name], device)
                if r > 0 or k > 0:  # the very first step of each is warm-up
                    wall[name].append(w)
                    cpu[name].append(c)
        lasts.append(_timed(steps["env"], device)[0])
    examples = len(env.modalities) * args.base_batch * loop.iterations
    med = {name: {"wall": statistics.median(wall[name]), "cpu": statistics.median(cpu[name])} for name in names}
    return {
        "dataset": dataset,
        "iterations_per_step": loop.iterations,
        "examples_per_step": examples,
        "env_steps_per_s": 1 / med["env"]["wall"],
        "loop_steps_per_s": 1 / med["loop"]["wall"],
        "env_examples_per_s": examples / med["env"]["wall"],
        "loop_examples_per_s": examples / med["loop"]["wall"],
        "ratio": med["loop"]["wall"] / med["env"]["wall"],
        "ratio_cpu": med["loop"]["cpu"] / med["env"]["cpu"],
        "ratio_cpu_vs_scores_loop": med["loop_scores"]["cpu"] / med["env"]["cpu"],
        "env_cpu_s_per_step": med["env"]["cpu"],
        "loop_cpu_s_per_step": med["loop"]["cpu"],
        "loop_scores_cpu_s_per_step": med["loop_scores"]["cpu"],
        "reset_s": statistics.median(resets),
        "last_step_extra_s": statistics.median(lasts) - med["env"]["wall"],
    }


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
        "torch_threads": torch.get_num_threads(), "gpu": None,
        "load_average_1min": os.getloadavg()[0],
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def to_markdown(result: dict[str, Any]) -> str:
    """The measurements as Markdown tables."""
    m = result["machine"]
    lines = [
        f"Machine: {m['cpu_cores']} CPU cores, GPU: {m['gpu'] or 'none'}, device {result['device']}, "
        f"torch {m['torch']}, {m['torch_threads']} torch thread(s), load average {m['load_average_1min']:.1f} "
        f"at the start (other processes share the CPUs: compare the CPU-time columns); {result['date']}.",
        "",
    ]
    if result.get("overhead"):
        lines += [
            "(a) Env against a hand-written loop (uniform sampling, joint training; env and loop stepped in "
            "lockstep, median step time; steps/s and examples/s in wall time; the ratio env/loop in wall time and "
            "in CPU time of the process, the latter robust to other load; the last step's test metrics and probes "
            "are excluded and listed apart; the loop with scores also computes each modality's loss and "
            "true-class score per iteration, as any DUS loop must):",
            "",
            "| dataset | iterations/step | env steps/s | loop steps/s | env examples/s | loop examples/s "
            "| ratio (wall) | ratio (CPU) | ratio (CPU) vs loop with scores | reset (s) | last-step extra (s) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in result["overhead"]:
            lines.append(
                f"| {r['dataset']} | {r['iterations_per_step']} | {r['env_steps_per_s']:.2f} | "
                f"{r['loop_steps_per_s']:.2f} | {r['env_examples_per_s']:.0f} | {r['loop_examples_per_s']:.0f} | "
                f"{r['ratio']:.3f} | {r['ratio_cpu']:.3f} | {r['ratio_cpu_vs_scores_loop']:.3f} | "
                f"{r['reset_s']:.3f} | {r['last_step_extra_s']:.3f} |"
            )
        lines.append("")
    if result.get("scaling"):
        lines += [
            f"(b) Parallel envs (SubprocVecEnv, {result['scaling_dataset']}):",
            "",
            "| envs | env steps/s | speedup | efficiency |",
            "|---|---|---|---|",
        ]
        for r in result["scaling"]:
            lines.append(
                f"| {r['num_envs']} | {r['env_steps_per_s']:.2f} | {r['speedup']:.2f} | {r['efficiency']:.2f} |"
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
    args = parse_args(Args, argv, description=__doc__)
    unknown = set(args.skip) - {"overhead", "scaling", "episodes"}
    if unknown:
        raise ValueError(f"--skip {sorted(unknown)}: expected any of overhead, scaling, episodes")
    # Seeding: every run takes its split, initialisation and batch-order seeds from --seed.
    torch.set_num_threads(args.torch_threads)
    device = resolve_device(args.device)
    result: dict[str, Any] = {
        "args": asdict(args), "machine": machine(), "device": str(device),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if "overhead" not in args.skip:
        result["overhead"] = [overhead(args, d) for d in args.datasets]
    if "scaling" not in args.skip:
        result["scaling_dataset"] = args.datasets[0]
        result["scaling"] = scaling(args, args.datasets[0])
    if "episodes" not in args.skip:
        result["episodes"] = episode_times(args)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = to_markdown(result)
    (output / "throughput.md").write_text(markdown)
    print(markdown)
    return result


if __name__ == "__main__":
    main()
